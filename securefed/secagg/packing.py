"""Bit packing of ring elements for the wire (protocols/secagg.md §4.3).

Element ``i`` of a vector of ``b``-bit values occupies bits ``[i*b, (i+1)*b)`` of
the packed string, where bit ``j`` of byte ``k`` is bit number ``8k + j`` (least
significant first). The packed length is ``ceil(count * b / 8)`` bytes; unused
high bits of the last byte are zero and are checked on unpacking.
"""

from __future__ import annotations

import numpy as np

from securefed.errors import ProtocolError
from securefed.secagg.primitives import RingArray, ring_dtype

__all__ = ["pack", "packed_size", "unpack"]

_GROUP = 64  # 64 values of b bits fill exactly b 64-bit words


def packed_size(count: int, bits: int) -> int:
    """Bytes needed for ``count`` values of ``bits`` bits."""
    return (count * bits + 7) // 8


def pack(values: RingArray, bits: int) -> bytes:
    """Pack ``values`` (each < 2^bits) into ``packed_size(len(values), bits)`` bytes."""
    if not 1 <= bits <= 64:
        raise ValueError("bits must be in [1, 64]")
    count = int(values.shape[0])
    if bits == 64 or (bits == 32 and values.dtype == np.uint32):
        return values.astype(values.dtype.newbyteorder("<"), copy=False).tobytes()
    groups = -(-count // _GROUP)
    padded = np.zeros(groups * _GROUP, dtype=np.uint64)
    padded[:count] = values
    columns = np.ascontiguousarray(padded.reshape(groups, _GROUP).T)
    words = np.zeros((bits, groups), dtype=np.uint64)
    for i in range(_GROUP):
        offset = i * bits
        word, shift = divmod(offset, 64)
        column = columns[i]
        words[word] |= column << np.uint64(shift)
        if shift + bits > 64:
            words[word + 1] |= column >> np.uint64(64 - shift)
    out = np.ascontiguousarray(words.T).astype("<u8", copy=False).tobytes()
    return out[: packed_size(count, bits)]


def unpack(data: bytes, bits: int, count: int) -> RingArray:
    """Inverse of :func:`pack`.

    Raises:
        ProtocolError: wrong length or non-zero padding bits.
    """
    if not 1 <= bits <= 64:
        raise ValueError("bits must be in [1, 64]")
    if len(data) != packed_size(count, bits):
        raise ProtocolError("packed vector has the wrong length")
    dtype = ring_dtype(bits)
    total_bits = count * bits
    if total_bits % 8 and data[-1] >> (total_bits % 8):
        raise ProtocolError("packed vector has non-zero padding bits")
    if bits in (32, 64):
        return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
    groups = -(-count // _GROUP)
    buffer = bytearray(groups * bits * 8)
    buffer[: len(data)] = data
    words = np.ascontiguousarray(
        np.frombuffer(bytes(buffer), dtype="<u8").reshape(groups, bits).T
    ).astype(np.uint64)
    mask = np.uint64((1 << bits) - 1)
    values = np.empty((groups, _GROUP), dtype=np.uint64)
    for i in range(_GROUP):
        offset = i * bits
        word, shift = divmod(offset, 64)
        column = words[word] >> np.uint64(shift)
        if shift + bits > 64:
            column |= words[word + 1] << np.uint64(64 - shift)
        np.bitwise_and(column, mask, out=values[:, i])
    return values.reshape(-1)[:count].astype(dtype, copy=False)
