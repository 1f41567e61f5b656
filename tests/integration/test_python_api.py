# SPDX-License-Identifier: LGPL-2.1-or-later
"""libvirt-python: save/restore and their Flags and Params variants."""

import json
import os

import pytest

# In the suite of every supported Debian release (scripts/suite).
pytestmark = pytest.mark.every_release


def py(env, code):
    """Run a snippet; it prints one JSON value, which is returned."""
    out = env.python(code).stdout.strip().splitlines()
    return json.loads(out[-1]) if out else None


def test_python_save_and_restore(env, guest):
    img = env.image('py-plain.img')
    py(env, f'''
        import json
        dom = conn.lookupByName({guest.name!r})
        dom.save({img!r})
        print(json.dumps(dom.info()[0]))
    ''')
    assert guest.state() == 'shut off'
    guest.checkpoint()
    py(env, f'''
        conn.restore({img!r})
        print(1)
    ''')
    guest.assert_continued()


def test_python_save_flags_and_restore_flags(env, guest):
    img = env.image('py-flags.img')
    py(env, f'''
        dom = conn.lookupByName({guest.name!r})
        dom.saveFlags({img!r}, None, libvirt.VIR_DOMAIN_SAVE_PAUSED)
        print(1)
    ''')
    guest.checkpoint()
    state = py(env, f'''
        conn.restoreFlags({img!r}, None, 0)
        print(conn.lookupByName({guest.name!r}).state()[0])
    ''')
    assert state == 3  # VIR_DOMAIN_PAUSED
    assert guest.state() == 'paused'
    env.virsh.run('resume', guest.name)
    guest.assert_continued()


def test_python_save_params_and_restore_params(env, guest):
    img = env.image('py-params.img')
    py(env, f'''
        dom = conn.lookupByName({guest.name!r})
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE)
        xml = xml.replace('</name>', '</name><description>via saveParams</description>', 1)
        dom.saveParams({{libvirt.VIR_DOMAIN_SAVE_PARAM_FILE: {img!r},
                        libvirt.VIR_DOMAIN_SAVE_PARAM_DXML: xml}})
        assert 'via saveParams' in conn.saveImageGetXMLDesc({img!r}, 0)
        print(1)
    ''')
    guest.checkpoint()
    state = py(env, f'''
        import json
        conn.restoreParams({{libvirt.VIR_DOMAIN_SAVE_PARAM_FILE: {img!r}}},
                           libvirt.VIR_DOMAIN_SAVE_RUNNING)
        print(json.dumps(conn.lookupByName({guest.name!r}).state()[0]))
    ''')
    assert state == 1  # VIR_DOMAIN_RUNNING
    guest.assert_continued()


def test_python_bad_arguments_are_invalid_arg(env, guest):
    img = env.image('py-bad.img')
    codes = py(env, f'''
        import json
        dom = conn.lookupByName({guest.name!r})
        out = {{}}
        def code(name, fn):
            try:
                fn()
                out[name] = None
            except libvirt.libvirtError as e:
                out[name] = [e.get_error_code(), e.get_error_message()]
        code('unknown-param', lambda: dom.saveParams({{'file': {img!r}, 'bogus': 'x'}}))
        code('both-flags', lambda: dom.saveFlags({img!r}, None,
             libvirt.VIR_DOMAIN_SAVE_RUNNING | libvirt.VIR_DOMAIN_SAVE_PAUSED))
        code('unknown-flag', lambda: dom.saveFlags({img!r}, None, 1 << 20))
        code('restore-unknown-param', lambda: conn.restoreParams({{'file': {img!r}, 'x': 'y'}}))
        print(json.dumps(out))
    ''')
    VIR_ERR_INVALID_ARG = 8
    for name, val in codes.items():
        assert val is not None, f'{name} was accepted'
        assert val[0] == VIR_ERR_INVALID_ARG, (name, val)
    assert 'bogus' in codes['unknown-param'][1]
    assert not os.path.exists(img)
    assert guest.state() == 'running'


def test_python_save_of_shut_off_guest_is_operation_invalid(env, guest):
    img = env.image('py-off.img')
    env.virsh.destroy(guest.name)
    code = py(env, f'''
        import json
        try:
            conn.lookupByName({guest.name!r}).save({img!r})
            print(json.dumps(None))
        except libvirt.libvirtError as e:
            print(json.dumps(e.get_error_code()))
    ''')
    assert code == 55  # VIR_ERR_OPERATION_INVALID
    assert not os.path.exists(img)
