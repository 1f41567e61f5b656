# SPDX-License-Identifier: LGPL-2.1-or-later
"""The <kvmsave:migrateFrom> extension: create and start restore from an image."""

import re
import subprocess
import tempfile

from test_image_formats import restore_params, save_params

NS = "xmlns:kvmsave='urn:kvmsave:domain:1'"


def with_migrate_from(xml, path):
    elem = f"<kvmsave:migrateFrom {NS}>{path}</kvmsave:migrateFrom>"
    if '<metadata/>' in xml:
        return xml.replace('<metadata/>', f'<metadata>{elem}</metadata>', 1)
    if '<metadata>' in xml:
        return xml.replace('<metadata>', f'<metadata>{elem}', 1)
    return xml.replace('</name>', f'</name><metadata>{elem}</metadata>', 1)


def test_create_with_migrate_from_restores_the_guest(env, guest):
    img = env.image('create.img')
    env.virsh.run('save', guest.name, img)
    guest.checkpoint()
    xml = env.virsh.run('save-image-dumpxml', '--security-info', img).stdout
    env.virsh.create(with_migrate_from(xml, img))
    assert guest.state() == 'running'
    live = env.virsh.run('dumpxml', guest.name).stdout
    assert f'>{img}</kvmsave:migrateFrom>' in live
    guest.assert_continued()


def test_create_with_migrate_from_and_incompatible_xml_is_refused(env, guest):
    img = env.image('create-bad.img')
    env.virsh.run('save', guest.name, img)
    guest.checkpoint()
    xml = env.virsh.run('save-image-dumpxml', '--security-info', img).stdout
    bad = re.sub(r'<vcpu( [^>]*)?>1</vcpu>', "<vcpu placement='static'>2</vcpu>", xml)
    assert bad != xml
    res = env.virsh.create(with_migrate_from(bad, img), check=False)
    assert res.returncode != 0 and 'not compatible' in res.stderr
    assert guest.state() == 'shut off'
    env.virsh.run('restore', img)
    guest.assert_continued()


def test_invalid_migrate_from_is_refused(env, guest):
    xml = env.virsh.run('dumpxml', '--inactive', guest.name).stdout
    res = env.virsh.create(with_migrate_from(xml, 'relative/path.img'), check=False)
    assert res.returncode != 0
    assert 'migrateFrom' in res.stderr and 'absolute path' in res.stderr


def test_start_of_definition_with_migrate_from_restores_once(env, guest):
    img = env.image('start.img')
    inactive = env.virsh.run('dumpxml', '--inactive', guest.name).stdout
    env.virsh.run('save', guest.name, img)
    guest.checkpoint()
    env.virsh.define(with_migrate_from(inactive, img))
    assert 'migrateFrom' in env.virsh.run('dumpxml', '--inactive', guest.name).stdout

    env.virsh.run('start', guest.name)
    guest.assert_continued()
    # restored once: the definition no longer carries it ...
    assert 'migrateFrom' not in env.virsh.run('dumpxml', '--inactive', guest.name).stdout
    # ... so the next start boots afresh
    env.virsh.destroy(guest.name)
    old_boot = guest.boot
    guest.start()
    assert guest.boot != old_boot


def test_definition_from_multifd_restored_live_xml_drops_incoming(env, guest):
    # Only an image of several streams restored in embedded mode starts
    # QEMU with kvmsave's "-incoming defer" (architecture.md, "Restore
    # routes"): its live XML carries the pair.
    img = env.image('live-define.img')
    assert save_params(env, guest, img, channels=2) is None
    assert restore_params(env, img) is None
    live = env.virsh.run('dumpxml', guest.name).stdout
    assert "<qemu:arg value='-incoming'/>" in live
    # ... and libvirt taints it, as test_restore_trace.py sees no other
    # route do
    assert 'tainted' in env.virsh.run('dominfo', guest.name).stdout
    env.virsh.destroy(guest.name)

    env.virsh.define(live)
    inactive = env.virsh.run('dumpxml', '--inactive', guest.name).stdout
    assert '-incoming' not in inactive
    # --force-boot ignores migrateFrom; the guest boots instead of waiting
    # for a migration that never comes
    old_boot = guest.boot
    offset = guest.console.at_end(guest.console_path).offset
    env.virsh.run('start', '--force-boot', guest.name)
    guest.wait_booted(since=offset)
    assert guest.boot != old_boot
    # leave a clean definition for the next tests
    env.virsh.define(guest.xml)


def test_start_flags_unknown_to_restore_are_refused(env, guest):
    img = env.image('validate.img')
    env.virsh.run('save', guest.name, img)
    guest.checkpoint()
    xml = env.virsh.run('save-image-dumpxml', '--security-info', img).stdout
    res = env.virsh.create(with_migrate_from(xml, img), '--autodestroy', check=False)
    assert res.returncode != 0 and 'cannot be used when the domain restores from' in res.stderr
    assert guest.state() == 'shut off'
    env.virsh.run('restore', img)
    guest.assert_continued()


def test_pass_fds_is_refused_cleanly(env, guest):
    """Files cannot reach a restored guest, and libvirt's QEMU driver has no
    start-with-files at all: both are errors, never a crash."""
    img = env.image('pass-fds.img')
    env.virsh.run('save', guest.name, img)
    guest.checkpoint()
    xml = env.virsh.run('save-image-dumpxml', '--security-info', img).stdout
    with open(img, 'rb') as fh:
        fd = fh.fileno()
        for args in (['start', '--pass-fds', str(fd), guest.name],
                     ['start', '--force-boot', '--pass-fds', str(fd), guest.name]):
            res = subprocess.run(env.virsh.prefix + args, pass_fds=[fd],
                                 capture_output=True, text=True, timeout=120)
            assert res.returncode == 1, (args, res.returncode, res.stderr)
            assert 'not supported' in res.stderr, res.stderr
        with tempfile.NamedTemporaryFile('w', suffix='.xml') as x:
            x.write(with_migrate_from(xml, img))
            x.flush()
            res = subprocess.run(env.virsh.prefix + ['create', '--pass-fds', str(fd), x.name],
                                 pass_fds=[fd], capture_output=True, text=True, timeout=120)
        assert res.returncode == 1, res.stderr
        assert 'file descriptors cannot be passed' in res.stderr, res.stderr
    assert guest.state() == 'shut off'
    env.virsh.run('restore', img)
    guest.assert_continued()
