# SPDX-License-Identifier: LGPL-2.1-or-later
"""valgrind on virsh save/restore through the plugin: nothing from kvmsave.

Only the virsh process itself is judged (libvirt's forked helpers are not
kvmsave's). A definite leak counts against kvmsave when one of its frames
is on the allocation's stack; an invalid access, uninitialised use or bad
syscall argument when the innermost frame outside libc is kvmsave's code.
"""

import os
import re
import subprocess

from conftest import module_env, started_guest

VALGRIND = ['valgrind', '--leak-check=full', '--show-leak-kinds=definite',
            '--errors-for-leak-kinds=definite', '--num-callers=40',
            '--track-origins=no']

ERROR_KINDS = re.compile(
    r'Invalid (read|write|free)|Mismatched free|uninitialised|'
    r'Syscall param|Source and destination overlap|definitely lost')


vg_env = module_env('kvmsave-vg-')


def records(log):
    """valgrind's records: blocks of lines separated by empty ones."""
    blocks, cur = [], []
    for line in log.splitlines():
        body = re.sub(r'^==\d+==\s?', '', line)
        if body.strip():
            cur.append(body)
        elif cur:
            blocks.append(cur)
            cur = []
    if cur:
        blocks.append(cur)
    return blocks


KVMSAVE_FRAME = re.compile(r': kvmsave\w* \(|kvmsave_\w+\.c|libvirt_driver_kvmsave|kvmsave_impl')
LIBC_FRAME = re.compile(r'\((in [^)]*/(libc\.so|ld-linux)[^)]*|vg_replace[^)]*|[\w.-]+\.S:\d+)\)$')


def kvmsave_problems(log):
    bad = []
    for rec in records(log):
        if not ERROR_KINDS.search(rec[0]):
            continue
        frames = [l for l in rec[1:] if re.match(r'\s*(at|by) 0x', l)]
        if 'definitely lost' in rec[0]:
            ours = any(KVMSAVE_FRAME.search(f) for f in frames)
        else:
            inner = [f for f in frames if not LIBC_FRAME.search(f)]
            ours = bool(inner) and bool(KVMSAVE_FRAME.search(inner[0]))
        if ours:
            bad.append('\n'.join(rec))
    return bad


def run_under_valgrind(env, tmp_path, *args):
    logdir = tmp_path / ('vg-' + args[0])
    logdir.mkdir()
    cmd = [env.wrapper] if env.wrapper else []
    cmd += VALGRIND + [f'--log-file={logdir}/vg.%p.log',
                       'virsh', '-c', env.uri] + list(args)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, f'{args} failed under valgrind:\n{out}\n{err}'
    main_log = logdir / f'vg.{proc.pid}.log'
    assert main_log.exists(), sorted(os.listdir(logdir))
    log = main_log.read_text()
    assert 'ERROR SUMMARY' in log, log[-2000:]
    return log


def test_valgrind_finds_nothing_from_kvmsave(vg_env, tmp_path):
    g = started_guest(vg_env, 'vgguest', memory_mib=128, data_mib=8)
    img = vg_env.image('vg.img')

    log = run_under_valgrind(vg_env, tmp_path, 'save', g.name, img)
    g.checkpoint()
    problems = kvmsave_problems(log)
    log = run_under_valgrind(vg_env, tmp_path, 'restore', img)
    problems += kvmsave_problems(log)
    log = run_under_valgrind(vg_env, tmp_path, 'save-image-dumpxml', img)
    problems += kvmsave_problems(log)

    assert not problems, '\n\n'.join(problems)
    g.assert_continued()


def test_leak_check_can_fail():
    """The attribution finds a kvmsave frame in a made-up leak record."""
    log = ('==1== 16 bytes in 1 blocks are definitely lost in loss record 1 of 2\n'
           '==1==    at 0x1: malloc (vg_replace_malloc.c:1)\n'
           '==1==    by 0x2: g_malloc (in libglib)\n'
           '==1==    by 0x3: kvmsaveSaveDomain (kvmsave_save.c:10)\n'
           '==1== \n'
           '==1== 16 bytes in 1 blocks are definitely lost in loss record 2 of 2\n'
           '==1==    at 0x1: malloc (vg_replace_malloc.c:1)\n'
           '==1==    by 0x2: virProcessNamespaceAvailable (in libvirt.so)\n')
    assert len(kvmsave_problems(log)) == 1
    access = ('==1== Invalid read of size 4\n'
              '==1==    at 0x1: memcpy (vg_replace_strmem.c:1)\n'
              '==1==    by 0x2: kvmsaveImageReadChunk (kvmsave_imagereader.c:5)\n'
              '==1== \n'
              '==1== Syscall param bpf(attr->value) points to unaddressable byte(s)\n'
              '==1==    at 0x1: syscall (syscall.S:38)\n'
              '==1==    by 0x2: virBPFLookupElem (in /usr/lib/libvirt.so.0)\n'
              '==1==    by 0x3: kvmsaveRestoreDomain (kvmsave_restore.c:146)\n')
    assert len(kvmsave_problems(access)) == 1
