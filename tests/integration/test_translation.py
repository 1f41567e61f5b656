# SPDX-License-Identifier: LGPL-2.1-or-later
"""kvmsave's messages are translated: po/de.po is complete and, through
./run (KVMSAVE_LOCALEDIR, the build tree's catalogs), the plugin in virsh
and kvmsave-image speak German under LANGUAGE=de.

LC_ALL=C.UTF-8 needs no generated locale (glibc >= 2.35 has it built in)
and, unlike plain C, lets LANGUAGE choose the catalog.
"""

import os
import re
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, '..', '..'))
PO = os.path.join(TOP, 'po')


def localized_env(language):
    """The environment with only LANGUAGE and LC_ALL=C.UTF-8 choosing the language."""
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith('LC_') or k in ('LANG', 'LANGUAGE'))}
    env['LC_ALL'] = 'C.UTF-8'
    if language:
        env['LANGUAGE'] = language
    return env


def run(env, cmd, language):
    pre = [env.wrapper] if env.wrapper else []
    return subprocess.run(pre + cmd, capture_output=True, text=True, timeout=120,
                          env=localized_env(language))


def test_de_po_is_complete(tmp_path):
    # No fuzzy or untranslated entry, format strings valid.
    check = subprocess.run(['msgfmt', '--check', '--statistics', '-o', os.devnull,
                            os.path.join(PO, 'de.po')],
                           capture_output=True, text=True, env=localized_env(None))
    assert check.returncode == 0, check.stderr
    assert re.fullmatch(r'\d+ translated messages\.\n', check.stderr), check.stderr
    # ... and it covers every message of the current sources, not just of
    # the kvmsave.pot it was last merged with.
    pot = tmp_path / 'kvmsave.pot'
    subprocess.run(['xgettext', '--keyword=_', '--keyword=N_', '--from-code=UTF-8',
                    '--directory', TOP, '--files-from', os.path.join(PO, 'POTFILES.in'),
                    '-o', str(pot)], check=True, env=localized_env(None))
    cmp = subprocess.run(['msgcmp', os.path.join(PO, 'de.po'), str(pot)],
                         capture_output=True, text=True, env=localized_env(None))
    assert cmp.returncode == 0, cmp.stderr


def test_every_source_with_messages_is_in_potfiles():
    with open(os.path.join(PO, 'POTFILES.in')) as fh:
        listed = {l.strip() for l in fh if l.strip() and not l.startswith('#')}
    sources = set()
    for d in ('plugin', 'tools'):
        for f in os.listdir(os.path.join(TOP, d)):
            if f.endswith('.c'):
                with open(os.path.join(TOP, d, f)) as fh:
                    if '_("' in fh.read():
                        sources.add(f'{d}/{f}')
    assert sources - listed == set(), 'missing from po/POTFILES.in'


def test_virsh_restore_error_in_german(env):
    missing = '/nonexistent/file.img'
    cmd = ['virsh', '-c', env.uri, 'restore', missing]
    de = run(env, cmd, 'de')
    assert de.returncode != 0
    assert f"Speicherabbild '{missing}' kann nicht geöffnet werden" in de.stderr, de.stderr
    assert 'cannot open save image' not in de.stderr
    # The same command without LANGUAGE: kvmsave's English original.
    en = run(env, cmd, None)
    assert en.returncode != 0
    assert f"cannot open save image '{missing}'" in en.stderr, en.stderr


def test_kvmsave_image_verify_error_in_german(env, tmp_path):
    bogus = tmp_path / 'not-an-image.img'
    bogus.write_bytes(b'this is not a kvmsave save image\n' * 200)
    tool = env.image_tool
    cmd = [tool, 'verify', str(bogus)]
    de = run(env, cmd, 'de')
    assert de.returncode == 1
    assert f"'{bogus}' ist kein kvmsave-Speicherabbild (falsche Magic-Kennung)" in de.stderr, \
        de.stderr
    en = run(env, cmd, None)
    assert en.returncode == 1
    assert f"'{bogus}' is not a kvmsave save image (bad magic)" in en.stderr, en.stderr
    # kvmsave-image's own text (not an error of the image code) too.
    usage = run(env, [tool], 'de')
    assert usage.returncode == 2
    assert 'Verwendung: ' in usage.stderr and 'info|verify|xml DATEI' in usage.stderr, \
        usage.stderr
