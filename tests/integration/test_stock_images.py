# SPDX-License-Identifier: LGPL-2.1-or-later
"""Images saved by stock libvirt's own QEMU driver, restored through
kvmsave: the embedded QEMU driver of the same root saves the guest with
each save_image_format of DIR/etc/qemu.conf (raw, gzip, bzip2, xz, lzop;
with libvirt 11.2 and later zstd, and sparse, QEMU's mapped-ram, where
QEMU is 9.0 or later too), and virsh or libvirt-python restores the image
through kvmsave, the guest going on with its memory intact. save-image-dumpxml and -define and
kvmsave-image work on such images; an incomplete or truncated one is
refused, the guest left shut off and the file unchanged.

One small guest serves the whole module (stock's xz is slow: some 20 s for
this guest's 75 MB of state)."""

import json
import os
import re
import shutil
import subprocess

import pytest

import libvirt_consts as C
from conftest import module_env, sha256, started_guest
from kvmsave_harness import (DEFAULT_QEMU_CONF, PLAIN_QUICK_EXIT, Virsh, embed_uri,
                             run_python)
from test_restore_trace import plain_uri

# In the suite of every supported Debian release (scripts/suite).
pytestmark = pytest.mark.every_release

HEADER_LEN = 92


def _version(cmd, pattern):
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return tuple(int(x) for x in re.search(pattern, out).groups())


LIBVIRT_VERSION = _version(['virsh', '--version'], r'(\d+)\.(\d+)')
QEMU_VERSION = _version(['qemu-system-x86_64', '--version'], r'version (\d+)\.(\d+)')
# save_image_format "zstd" and "sparse" came with libvirt 11.2; sparse is
# QEMU's mapped-ram capability, new in QEMU 9.0 (Debian 12 has libvirt 9.0
# and QEMU 7.2).
NEW_FORMATS_REASON = (f'libvirt {LIBVIRT_VERSION[0]}.{LIBVIRT_VERSION[1]} cannot save it: '
                      f'save_image_format "zstd" and "sparse" need libvirt 11.2 or later')
SPARSE_QEMU_REASON = (f'QEMU {QEMU_VERSION[0]}.{QEMU_VERSION[1]} cannot save or load it: '
                      f'save_image_format "sparse" (mapped-ram) needs QEMU 9.0 or later')
HAVE_ZSTD = LIBVIRT_VERSION >= (11, 2)
HAVE_SPARSE = HAVE_ZSTD and QEMU_VERSION >= (9, 0)
# the formats this host's stock libvirt writes
FORMATS = ('raw', 'gzip', 'bzip2', 'xz', 'lzop') + (('zstd',) if HAVE_ZSTD else ()) + \
    (('sparse',) if HAVE_SPARSE else ())
ALL_FORMATS = [f if f in FORMATS else
               pytest.param(f, marks=pytest.mark.skip(
                   reason=NEW_FORMATS_REASON if not HAVE_ZSTD else SPARSE_QEMU_REASON))
               for f in ('raw', 'gzip', 'bzip2', 'xz', 'lzop', 'zstd', 'sparse')]
LV11_UUID = 'e66c08d8-4a37-456e-ba6a-e76b18a7d37f'    # the fixture's guest
SPARSE_PREFIX = os.path.join(os.path.dirname(__file__), '..', 'unit', 'data',
                             'libvirt-11.3-sparse-prefix.img')

stock_env = module_env('kvmsave-stock-')


@pytest.fixture(scope='module')
def stock_obj(stock_env):
    return started_guest(stock_env, 'stockguest', memory_mib=96, data_mib=8)


@pytest.fixture
def sguest(stock_obj):
    stock_obj.ensure_running()
    return stock_obj


def stock_image(env, fmt):
    return env.image(f'stock-{fmt}.img')


def ensure_stock_image(env, guest, fmt):
    """The image of FMT the restore test left, made now if that test did
    not run (a selection of tests): saved by stock, restored by kvmsave."""
    img = stock_image(env, fmt)
    if not os.path.exists(img):
        guest.ensure_running()
        stock_save(env, guest, fmt)
        env.virsh.run('restore', img)
    return img


def stock_save(env, guest, fmt, path=None):
    """virsh save by libvirt's own QEMU driver, embedded in the same root,
    with qemu.conf asking for FMT; then the guest's last beat is final."""
    path = path or stock_image(env, fmt)
    with open(os.path.join(env.root, 'etc', 'qemu.conf'), 'w') as fh:
        fh.write(DEFAULT_QEMU_CONF + f'save_image_format = "{fmt}"\n')
    Virsh(['virsh', '-c', embed_uri(env.root)]).run('save', guest.name, path,
                                                   timeout=300)
    guest.checkpoint()
    with open(path, 'rb') as fh:
        assert fh.read(16) == b'LibvirtQemudSave'
    return path


def stock_image_xml(env, path):
    """save-image-dumpxml of PATH as stock libvirt gives it, while the
    stock guest runs (see PLAIN_QUICK_EXIT)."""
    pre = [env.wrapper] if env.wrapper else []
    code = f'print(conn.saveImageGetXMLDesc({path!r}, 0))' + PLAIN_QUICK_EXIT
    return run_python(pre, embed_uri(env.root), code).stdout


def tool(env, *args, check=True):
    return subprocess.run([env.image_tool, *args], check=check,
                          capture_output=True, text=True)


def stream_size(path):
    """The stored stream's bytes: the file past header and XML area."""
    with open(path, 'rb') as fh:
        head = fh.read(HEADER_LEN)
    data_len = int.from_bytes(head[20:24], 'little')
    return os.path.getsize(path) - HEADER_LEN - data_len


def restore_python(env, guest, code):
    """CODE restores (conn is open); prints the completed job's stats."""
    out = env.python(f'''
        import json
        {code}
        dom = conn.lookupByName({guest.name!r})
        print(json.dumps(dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)))
    ''', timeout=300).stdout.strip().splitlines()[-1]
    return json.loads(out)


def restore_error_code(env, path):
    """The error code of libvirt-python's restore() of PATH, which fails."""
    out = env.python(f'''
        try:
            conn.restore({path!r})
        except libvirt.libvirtError as e:
            print(e.get_error_code())
    ''').stdout.split()
    assert len(out) == 1, out
    return int(out[0])


def with_description(xml, text):
    return xml.replace('</name>', f'</name>\n  <description>{text}</description>', 1)


@pytest.mark.parametrize('fmt', ALL_FORMATS)
def test_stock_image_restores_through_kvmsave(stock_env, sguest, fmt, tmp_path):
    """Each format, each way of restoring once: virsh (plain, with
    --bypass-cache, with --xml) and Python's restoreFlags and
    restoreParams, whose job reports the stored stream as its progress."""
    env = stock_env
    img = stock_save(env, sguest, fmt)
    assert sguest.state() == 'shut off'
    info = tool(env, 'info', img).stdout
    assert 'stock libvirt save image, version 2' in info
    assert f', {fmt}\n' in info and 'state:         running on restore' in info

    if fmt in ('raw', 'zstd', 'sparse'):
        env.virsh.run('restore', img)
    elif fmt == 'gzip':
        env.virsh.run('restore', img, '--bypass-cache')
    elif fmt == 'xz':
        dxml = tmp_path / 'restore.xml'
        xml = env.virsh.run('save-image-dumpxml', '--security-info', img).stdout
        dxml.write_text(with_description(xml, 'restored from xz'))
        env.virsh.run('restore', img, '--xml', str(dxml))
        assert 'restored from xz' in env.virsh.run('dumpxml', sguest.name).stdout
    else:
        call = (f'conn.restoreFlags({img!r}, None, 0)' if fmt == 'bzip2' else
                f'conn.restoreParams({{"file": {img!r}}}, 0)')
        done = restore_python(env, sguest, call)
        assert done['type'] == C.JOB_COMPLETED, done
        assert done['operation'] == C.JOB_OPERATION_RESTORE
        assert done['data_total'] == done['data_processed'] == stream_size(img)
    assert sguest.state() == 'running'
    sguest.assert_continued()
    # the image is only read; the guest runs the CPU of stock's save cookie
    with open(img, 'rb') as fh:
        assert fh.read(16) == b'LibvirtQemudSave'
    assert "check='full'" in env.virsh.run('dumpxml', sguest.name).stdout
    if fmt == 'sparse':
        assert 'mapped-ram' in info
        # the layout read from QEMU's stream in the image
        assert re.search(r'RAM block: +pc\.ram, \d+ bytes, pages at offset \d+', info), info
        assert re.search(r'device state: +\d+ bytes at offset \d+', info), info


def test_save_image_dumpxml_and_define(stock_env, stock_obj, tmp_path):
    """On the lzop image: dumpxml as through stock libvirt, secure or not;
    define writes a new image stock libvirt reads too."""
    env = stock_env
    img = ensure_stock_image(env, stock_obj, 'lzop')
    copy = env.image('define-lzop.img')
    shutil.copy(img, copy)
    ours = env.virsh.run('save-image-dumpxml', copy).stdout
    theirs = stock_image_xml(env, copy)
    for field in ('<name>stockguest</name>', '<uuid>', 'qemu64', 'kvmsave.data=8'):
        assert field in ours and field in theirs, field
    assert '<uuid>' in env.virsh.run('save-image-dumpxml', '--security-info', copy).stdout

    new = tmp_path / 'new.xml'
    new.write_text(with_description(ours, 'defined through kvmsave'))
    env.virsh.run('save-image-define', copy, str(new), '--paused')
    assert 'defined through kvmsave' in stock_image_xml(env, copy)
    assert 'state:         paused on restore' in tool(env, 'info', copy).stdout
    assert 'lzop' in tool(env, 'info', copy).stdout
    assert 'OK as far as it can be checked' in tool(env, 'verify', copy).stdout
    # an XML of another guest is refused, the image left as it was
    before = sha256(copy)
    other = tmp_path / 'other.xml'
    other.write_text(re.sub(r'(<(current)?[mM]emory unit=.KiB.>)\d+', r'\g<1>196608', ours))
    assert 'not compatible' in env.virsh.fails('save-image-define', copy, str(other))
    assert sha256(copy) == before


def test_kvmsave_image_on_stock_images(stock_env, stock_obj):
    env = stock_env
    for fmt in FORMATS:
        img = ensure_stock_image(env, stock_obj, fmt)
        out = tool(env, 'verify', img).stdout
        assert 'OK as far as it can be checked' in out and 'no checksums' in out, out
        assert '<name>stockguest</name>' in tool(env, 'xml', img).stdout
    info = tool(env, 'info', stock_image(env, 'raw')).stdout
    assert 'silent corruption goes unnoticed' in info
    cut = env.image('verify-cut.img')
    with open(stock_image(env, 'xz'), 'rb') as src, open(cut, 'wb') as dst:
        dst.write(src.read(os.path.getsize(stock_image(env, 'xz')) // 2))
    res = tool(env, 'verify', cut, check=False)
    assert res.returncode == 1 and 'xz stream ends early' in res.stderr, res.stderr


def test_bad_stock_images_are_refused_and_kept(stock_env, sguest):
    """An incomplete image (its stock save was interrupted) is refused
    before anything starts; truncated ones once QEMU or the decoder finds
    the end: the guest is left shut off every time, the files unchanged.
    Then the good image restores with --paused."""
    env = stock_env
    gzip_img = ensure_stock_image(env, sguest, 'gzip')
    img = stock_save(env, sguest, 'raw', env.image('good-raw.img'))
    size = os.path.getsize(img)

    part = env.image('part.img')
    shutil.copy(img, part)
    with open(part, 'r+b') as fh:
        fh.write(b'LibvirtQemudPart')
    cut_raw = env.image('cut-raw.img')
    cut_gzip = env.image('cut-gzip.img')
    for src, dst, keep in ((img, cut_raw, size // 2),
                           (gzip_img, cut_gzip, os.path.getsize(gzip_img) * 2 // 3)):
        with open(src, 'rb') as s, open(dst, 'wb') as d:
            d.write(s.read(keep))

    cases = [
        (part, ['incomplete save image of stock libvirt', 'was interrupted',
                'cannot be restored', 'was not saved']),
        (cut_raw, ['QEMU could not load', 'probably truncated or damaged',
                   'carry no checksums', 'not restored']),
        (cut_gzip, ['of stock libvirt is truncated', 'gzip stream ends early']),
    ]
    for path, words in cases:
        before = sha256(path)
        err = env.virsh.fails('restore', path)
        for w in words:
            assert w in err, (path, err)
        assert sguest.state() == 'shut off', path
        assert os.path.exists(path) and sha256(path) == before, path

    # and through the API: the same code, the file still there
    assert restore_error_code(env, part) == C.VIR_ERR_OPERATION_FAILED
    assert os.path.exists(part)

    env.virsh.run('restore', img, '--paused')
    assert sguest.state() == 'paused'
    env.virsh.run('resume', sguest.name)
    sguest.assert_continued()


@pytest.mark.parametrize('fmt', [f for f in ALL_FORMATS
                                 if getattr(f, 'values', (f,))[0] in ('zstd', 'sparse')])
def test_save_image_calls_on_libvirt_11_formats(stock_env, stock_obj, fmt, tmp_path):
    """zstd and sparse images: save-image-dumpxml as stock libvirt gives
    it; save-image-define writes an image stock libvirt reads, a sparse
    one with its XML area (and so its stream's file offsets) unmoved."""
    env = stock_env
    img = ensure_stock_image(env, stock_obj, fmt)
    copy = env.image(f'define-{fmt}.img')
    shutil.copy(img, copy)
    ours = env.virsh.run('save-image-dumpxml', copy).stdout
    assert '<name>stockguest</name>' in ours and '<name>stockguest</name>' in stock_image_xml(env, copy)
    new = tmp_path / 'new.xml'
    new.write_text(with_description(ours, f'defined through kvmsave ({fmt})'))
    env.virsh.run('save-image-define', copy, str(new))
    assert f'defined through kvmsave ({fmt})' in stock_image_xml(env, copy)
    assert stream_size(copy) == stream_size(img)
    out = tool(env, 'verify', copy).stdout
    assert 'OK as far as it can be checked' in out, out
    if fmt == 'sparse':
        # the XML area cannot grow: refused, the image as it was
        before = sha256(copy)
        new.write_text(with_description(ours, 'x' * 200000))
        assert 'cannot grow' in env.virsh.fails('save-image-define', copy, str(new))
        assert sha256(copy) == before


@pytest.mark.skipif(QEMU_VERSION >= (9, 0),
                    reason=f'QEMU {QEMU_VERSION[0]}.{QEMU_VERSION[1]} loads sparse images '
                           '(test_stock_image_restores_through_kvmsave[sparse])')
def test_sparse_image_refused_before_qemu_9(stock_env, tmp_path):
    """The beginning of a sparse image libvirt 11.3 wrote (the unit tests'
    fixture): on QEMU before 9.0 the restore is refused before anything
    starts, saying what it needs; the file unchanged, no guest left."""
    env = stock_env
    img = str(tmp_path / 'sparse.img')
    shutil.copy(SPARSE_PREFIX, img)
    before = sha256(img)
    err = env.virsh.fails('restore', img)
    for w in ('sparse save image of stock libvirt', 'mapped-ram',
              'QEMU 9.0 or later', f'this host has QEMU {QEMU_VERSION[0]}.{QEMU_VERSION[1]}'):
        assert w in err, err
    assert restore_error_code(env, img) == C.VIR_ERR_OPERATION_UNSUPPORTED
    assert sha256(img) == before
    assert 'failed to get domain' in env.virsh.fails('domstate', LV11_UUID)
    # the save-image calls and kvmsave-image work on it here too
    assert '<name>stockguest</name>' in env.virsh.run('save-image-dumpxml', img).stdout
    assert 'mapped-ram' in tool(env, 'info', img).stdout
    assert 'OK as far as it can be checked' in tool(env, 'verify', img).stdout


@pytest.mark.libvirtd
@pytest.mark.skipif(not HAVE_SPARSE, reason=NEW_FORMATS_REASON if not HAVE_ZSTD
                    else SPARSE_QEMU_REASON)
def test_sparse_image_of_save_params_restores(env, guest):
    """A sparse image saved through virDomainSaveParams' image_format
    (libvirt 11.2) by the QEMU driver itself, embedded or a daemon's,
    restores through kvmsave: over a daemon too, QEMU reads the file from
    the descriptor kvmsave hands it."""
    img = env.image('params-sparse.img')
    code = f'''
dom = conn.lookupByName({guest.name!r})
dom.saveParams({{'file': {img!r}, 'image_format': 'sparse'}}, 0)
''' + PLAIN_QUICK_EXIT
    pre = [env.wrapper] if env.wrapper else []
    run_python(pre, plain_uri(env), code)
    guest.checkpoint()
    assert 'mapped-ram' in tool(env, 'info', img).stdout
    env.virsh.run('restore', img)
    assert guest.state() == 'running'
    guest.assert_continued()
