# SPDX-License-Identifier: LGPL-2.1-or-later
"""Rewrite the header fields of a kvmsave image as a foreign or future
host would have written them (docs/image-format.md), with valid checksums:
the header's own and the trailer's copy of it. The header must keep its
size, so the chunks stay where they are."""

import struct

HEADER_FIXED = 64
TRAILER = 64
ALIGN = 4096

FIELD_XML = 1
FIELD_MACHINE = 4
FIELD_HOST_CPU = 5
FIELD_DISKS = 8


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b'123456789') == 0xE3069283


def read_fields(path):
    """The header's fields: a list of [tag, flags, value bytes]."""
    with open(path, 'rb') as fh:
        fixed = fh.read(HEADER_FIXED)
        nfields, fields_len = struct.unpack_from('<II', fixed, 48)
        area = fh.read(fields_len)
    fields, off = [], 0
    for _ in range(nfields):
        tag, flags, vlen = struct.unpack_from('<HHI', area, off)
        fields.append([tag, flags, area[off + 8:off + 8 + vlen]])
        off += 8 + (vlen + 7) // 8 * 8
    return fields


def field(path, tag):
    for t, _, value in read_fields(path):
        if t == tag:
            return value.decode()
    return None


PAGEINDEX = 10
ALIGN = 4096


def _encode_fields(fields):
    area = b''
    for tag, flags, value in fields:
        pad = (len(value) + 7) // 8 * 8 - len(value)
        area += struct.pack('<HHI', tag, flags, len(value)) + value + b'\0' * pad
    return area


def rewrite_fields(path, edit):
    """Call edit(fields) on the header's field list, then write it back.
    A page index (format 1.5) moves with the end of the field area, and
    its field says where it went."""
    with open(path, 'r+b') as fh:
        fixed = bytearray(fh.read(HEADER_FIXED))
        header_size, = struct.unpack_from('<I', fixed, 12)
        fields = read_fields(path)
        index = None
        for f in fields:
            if f[0] == PAGEINDEX:
                off, length, crc = f[2].decode().split()
                fh.seek(int(off))
                index = (int(length), crc, fh.read(int(length)))
        edit(fields)
        area = _encode_fields(fields)
        index_off = (HEADER_FIXED + len(area) + 4 + ALIGN - 1) // ALIGN * ALIGN
        if index:
            for f in fields:
                if f[0] == PAGEINDEX:
                    f[2] = f'{index_off:020d} {index[0]:020d} {index[1]}'.encode()
            area = _encode_fields(fields)
            if index_off + index[0] > header_size:
                raise ValueError('the edited header leaves no room for its page index')
        if HEADER_FIXED + len(area) + 4 > header_size:
            raise ValueError('the edited header does not fit in the old one')
        struct.pack_into('<II', fixed, 48, len(fields), len(area))
        body = bytes(fixed) + area
        crc = crc32c(body)
        header = body + struct.pack('<I', crc)
        header += b'\0' * (header_size - len(header))
        if index:
            header = header[:index_off] + index[2] + header[index_off + index[0]:]
        fh.seek(0)
        fh.write(header)
        # The trailer names its header by checksum, and has its own.
        fh.seek(-TRAILER, 2)
        trailer = bytearray(fh.read(TRAILER))
        struct.pack_into('<I', trailer, 32, crc)
        struct.pack_into('<I', trailer, 60, crc32c(bytes(trailer[:60])))
        fh.seek(-TRAILER, 2)
        fh.write(trailer)


def replace_in_field(path, tag, old, new):
    """Replace text @old by @new in the string field @tag."""
    def edit(fields):
        for f in fields:
            if f[0] == tag:
                text = f[2].decode()
                assert old in text, (old, text[:500])
                f[2] = text.replace(old, new).encode()
    rewrite_fields(path, edit)
