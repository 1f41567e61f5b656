# SPDX-License-Identifier: LGPL-2.1-or-later
"""Corruption of every region of an image, restored through virsh: one
byte changed in each field of the header, in the chunk headers and the
payloads of the first, a middle and the last chunk, and in the trailer.
Each is refused with a message naming what is wrong, the guest never runs
(it stays shut off) and the damaged copy is left as it was. The padding
regions hold no data and are documented as unchecked: a copy damaged in
both is restored last, bringing the guest back with its memory intact,
and the good image is unchanged throughout."""

import shutil
import struct

import pytest

from conftest import sha256

# In the suite of every supported Debian release (scripts/suite).
pytestmark = pytest.mark.every_release

HEADER_FIXED = 64
CHUNK_HEADER = 32
TRAILER = 64


def layout(path):
    """Offsets of the image's regions (docs/image-format.md)."""
    with open(path, 'rb') as fh:
        data = fh.read()
    header_size, = struct.unpack_from('<I', data, 12)
    fields_len, = struct.unpack_from('<I', data, 52)
    data_end, = struct.unpack_from('<Q', data, len(data) - TRAILER + 24)
    chunks = []
    off = header_size
    while off < data_end:
        stored, = struct.unpack_from('<I', data, off + 16)
        chunks.append((off, stored))
        off += CHUNK_HEADER + stored
    assert off == data_end and len(chunks) >= 3, (off, data_end, len(chunks))
    return header_size, fields_len, chunks, data_end, len(data)


def cases(path):
    """(name, offset, what the error must say; None: it restores)."""
    header_size, fields_len, chunks, data_end, size = layout(path)
    trailer = size - TRAILER
    mid = len(chunks) // 2
    out = [
        ('magic', 0, 'not a kvmsave save image'),
        ('major version', 9, 'newer than this kvmsave supports'),
        ('minor version', 10, 'header checksum mismatch'),
        ('header size', 12, 'corrupt header'),
        ('uuid', 20, 'header checksum mismatch'),
        ('created', 33, 'header checksum mismatch'),
        ('flags', 40, 'header checksum mismatch'),
        ('chunk size', 45, 'header checksum mismatch'),
        ('field count', 48, 'header checksum mismatch'),
        ('field area size', 54, 'corrupt header'),
        ('xml field tag', HEADER_FIXED, 'header checksum mismatch'),
        ('xml field value', HEADER_FIXED + 8 + 3, 'header checksum mismatch'),
        ('header checksum', HEADER_FIXED + fields_len, 'header checksum mismatch'),
    ]
    if HEADER_FIXED + fields_len + 4 < header_size:
        out.append(('header padding', HEADER_FIXED + fields_len + 4, None))
    for label, (off, stored) in (('first', chunks[0]), ('middle', chunks[mid]),
                                 ('last', chunks[-1])):
        idx = chunks.index((off, stored))
        out += [
            (f'{label} chunk magic', off, f'chunk {idx} at offset {off} has a bad magic'),
            (f'{label} chunk encoding', off + 4, f'chunk {idx} at offset {off} has a bad header checksum'),
            (f'{label} chunk index', off + 8, f'chunk {idx} at offset {off} has a bad header checksum'),
            (f'{label} chunk length', off + 16, f'chunk {idx} at offset {off} has a bad header checksum'),
            (f'{label} chunk data checksum', off + 24, f'chunk {idx} at offset {off} has a bad header checksum'),
            (f'{label} chunk header checksum', off + 28, f'chunk {idx} at offset {off} has a bad header checksum'),
            (f'{label} chunk payload start', off + CHUNK_HEADER, f'chunk {idx} at offset {off} has a data checksum mismatch'),
            (f'{label} chunk payload end', off + CHUNK_HEADER + stored - 1, f'chunk {idx} at offset {off} has a data checksum mismatch'),
        ]
    if trailer > data_end:
        out.append(('data padding', data_end, None))
    out += [
        ('trailer magic', trailer, 'it has no trailer'),
        ('trailer chunk count', trailer + 8, 'trailer checksum mismatch'),
        ('trailer stream bytes', trailer + 16, 'trailer checksum mismatch'),
        ('trailer data end', trailer + 24, 'trailer checksum mismatch'),
        ('trailer header checksum', trailer + 32, 'trailer checksum mismatch'),
        ('trailer completed', trailer + 40, 'trailer checksum mismatch'),
        ('trailer checksum', trailer + 60, 'trailer checksum mismatch'),
    ]
    return out


def flip(path, off):
    with open(path, 'r+b') as fh:
        fh.seek(off)
        b = fh.read(1)
        fh.seek(off)
        fh.write(bytes([b[0] ^ 0x40]))


def test_every_region_of_an_image_is_checked(env, guest):
    img = env.image('regions.img')
    env.virsh.run('save', guest.name, img)
    guest.checkpoint()
    good = sha256(img)
    bad = env.image('regions-bad.img')
    padding = []
    for name, off, expect in cases(img):
        if expect is None:
            padding.append(off)
            continue
        shutil.copyfile(img, bad)
        flip(bad, off)
        before = sha256(bad)
        err = env.virsh.fails('restore', bad)
        assert expect in err, (name, off, err)
        assert guest.state() == 'shut off', name
        assert sha256(bad) == before, name
    assert sha256(img) == good
    # no data in the padding: damaged there, the image still restores
    assert padding
    shutil.copyfile(img, bad)
    for off in padding:
        flip(bad, off)
    env.virsh.run('restore', bad)
    guest.assert_continued()


def test_a_bad_chunk_of_a_multifd_stream_is_named(env, guest):
    """In an image of three streams (2 multifd channels), a damaged chunk
    of a channel's stream is what the error names, not the broken pipes of
    the other streams' feeders that follow it."""
    img = env.image('regions-mfd.img')
    env.python(f"conn.lookupByName({guest.name!r}).saveParams("
               f"{{'file': {img!r}, 'parallel.channels': 2}})")
    guest.checkpoint()
    _, _, chunks, _, _ = layout(img)
    with open(img, 'rb') as fh:
        data = fh.read()
    # a chunk of the last stream, somewhere in the middle of the image
    mine = [i for i, (off, _) in enumerate(chunks)
            if struct.unpack_from('<H', data, off + 6)[0] == 2]
    idx = mine[len(mine) // 2]
    off, stored = chunks[idx]
    bad = env.image('regions-mfd-bad.img')
    shutil.copyfile(img, bad)
    flip(bad, off + CHUNK_HEADER + stored // 2)
    err = env.virsh.fails('restore', bad)
    assert f'chunk {idx} at offset {off} has a data checksum mismatch' in err, err
    assert guest.state() == 'shut off'
    env.virsh.run('restore', img)
    guest.assert_continued()
