"""Bit packing of ring elements for the wire (protocols/secagg.md §4.3).

Element ``i`` of a vector of ``b``-bit values occupies bits ``[i*b, (i+1)*b)`` of
the packed string, where bit ``j`` of byte ``k`` is bit number ``8k + j`` (least
significant first). The packed length is ``ceil(count * b / 8)`` bytes; unused
high bits of the last byte are zero and are checked on unpacking.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from securefed.errors import ProtocolError
from securefed.secagg.primitives import RingArray, ring_dtype

__all__ = ["pack", "packed_size", "padded_length", "unpack", "unpack_add"]

_GROUP = 64  # 64 values of b bits fill exactly b 64-bit words


def packed_size(count: int, bits: int) -> int:
    """Bytes needed for ``count`` values of ``bits`` bits."""
    return (count * bits + 7) // 8


def pack(values: RingArray, bits: int) -> bytes:
    """Pack ``values`` (each < 2^bits) into ``packed_size(len(values), bits)`` bytes."""
    if not 1 <= bits <= 64:
        raise ValueError("bits must be in [1, 64]")
    count = int(values.shape[0])
    width = _word_bits(bits)
    word_type = np.uint32 if width == 32 else np.uint64
    little = np.dtype(word_type).newbyteorder("<")
    if bits == width:
        return values.astype(little, copy=False).tobytes()
    groups = -(-count // width)
    padded = np.zeros((groups, width), dtype=word_type)
    padded.reshape(-1)[:count] = values
    words = np.zeros((groups, bits), dtype=word_type)
    for i in range(width):
        word, shift = divmod(i * bits, width)
        column = padded[:, i]
        words[:, word] |= column << word_type(shift)
        if shift + bits > width:
            words[:, word + 1] |= column >> word_type(width - shift)
    return words.astype(little, copy=False).tobytes()[: packed_size(count, bits)]


def padded_length(count: int) -> int:
    """Length of an accumulator for :func:`unpack_add`: ``count`` rounded up to 64."""
    return -(-count // _GROUP) * _GROUP


def _word_bits(bits: int) -> int:
    # Decode with 32-bit words when elements fit: half the column passes of 64-bit
    # words. The bit layout is the same either way (little-endian, LSB first).
    return 32 if bits <= 32 else 64


def _check(data: bytes, bits: int, count: int) -> None:
    """Validate a packed vector's length and padding bits."""
    if not 1 <= bits <= 64:
        raise ValueError("bits must be in [1, 64]")
    if len(data) != packed_size(count, bits):
        raise ProtocolError("packed vector has the wrong length")
    total_bits = count * bits
    if total_bits % 8 and data[-1] >> (total_bits % 8):
        raise ProtocolError("packed vector has non-zero padding bits")


def _checked_words(data: bytes, bits: int, count: int) -> npt.NDArray[np.unsignedinteger[Any]]:
    """Validate a packed vector and view it as words, one row of ``bits`` words per group."""
    _check(data, bits, count)
    width = _word_bits(bits)
    groups = -(-count // width)
    words = np.zeros(groups * bits, dtype="<u4" if width == 32 else "<u8")
    words.view(np.uint8)[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    return words.reshape(groups, bits)


def _columns(
    words: npt.NDArray[np.unsignedinteger[Any]], bits: int
) -> Iterator[tuple[int, RingArray]]:
    """Yield ``(i, element i of every group)``; a group is one word size of elements."""
    width = _word_bits(bits)
    word_type = np.uint32 if width == 32 else np.uint64
    mask = word_type((1 << bits) - 1)
    for i in range(width):
        word, shift = divmod(i * bits, width)
        column = words[:, word] >> word_type(shift)
        if shift + bits > width:
            column |= words[:, word + 1] << word_type(width - shift)
        if bits != width:
            column &= mask
        yield i, column


def _strided(bits: int, count: int) -> bool:
    # Every element plus its bit offset in its first byte must fit one 64-bit load;
    # offsets are multiples of gcd(b, 8), the largest is 8 - gcd(b, 8).
    return count > 0 and bits + 8 - math.gcd(bits, 8) <= 64


def _strided_columns(data: bytes, bits: int, count: int) -> tuple[int, Iterator[RingArray]]:
    """Decode by byte-aligned strided loads: ``(g, columns)``, column ``k`` = elements ``k::g``.

    Element ``i`` starts in byte ``(i*b) // 8`` at bit ``(i*b) % 8``; with
    ``g = 8 / gcd(b, 8)`` elements per ``g*b/8`` bytes, every ``g``-th element starts
    at the same bit offset, so column ``k`` is one strided (unaligned) word load,
    a shift and a mask: ``g`` vector passes instead of one per element of a word.
    Needs ``b + 8 - gcd(b, 8) <= 64``. The caller has validated ``data``.
    """
    group = 8 // math.gcd(bits, 8)
    group_bytes = group * bits // 8
    groups = -(-count // group)
    buffer = np.zeros(groups * group_bytes + 8, dtype=np.uint8)  # slack for the last load
    buffer[: len(data)] = np.frombuffer(data, dtype=np.uint8)

    def columns() -> Iterator[RingArray]:
        for k in range(group):
            offset, shift = divmod(k * bits, 8)
            word_type = np.uint32 if shift + bits <= 32 else np.uint64
            word_bits = 8 * np.dtype(word_type).itemsize
            loaded = np.ndarray(
                (groups,),
                dtype=np.dtype(word_type).newbyteorder("<"),
                buffer=buffer,
                offset=offset,
                strides=(group_bytes,),
            )
            column = loaded >> word_type(shift)
            if shift + bits != word_bits:
                column &= word_type((1 << bits) - 1)
            yield column

    return group, columns()


def unpack(data: bytes, bits: int, count: int) -> RingArray:
    """Inverse of :func:`pack`.

    Raises:
        ProtocolError: wrong length or non-zero padding bits.
    """
    if _strided(bits, count):
        _check(data, bits, count)
        group, columns = _strided_columns(data, bits, count)
        values = np.empty((-(-count // group), group), dtype=ring_dtype(bits))
        for k, column in enumerate(columns):
            values[:, k] = column
        return values.reshape(-1)[:count]
    words = _checked_words(data, bits, count)
    values = np.empty((words.shape[0], _word_bits(bits)), dtype=ring_dtype(bits))
    for i, column in _columns(words, bits):
        values[:, i] = column
    return values.reshape(-1)[:count]


def unpack_add(data: bytes, bits: int, count: int, total: RingArray) -> None:
    """Add the packed vector into ``total`` (modulo the word size) without materialising it.

    Args:
        data: a packed vector of ``count`` elements of ``bits`` bits.
        bits: element width.
        count: number of elements.
        total: accumulator of :func:`padded_length` (``count``) elements of
            :func:`ring_dtype` (``bits``); elements past ``count`` receive zeros.

    Raises:
        ProtocolError: wrong length or non-zero padding bits (``total`` unchanged).
    """
    _check(data, bits, count)
    if total.shape != (padded_length(count),) or total.dtype != ring_dtype(bits):
        raise ValueError("accumulator has the wrong shape or dtype")
    if _strided(bits, count):
        group, columns = _strided_columns(data, bits, count)
        grid = total[: -(-count // group) * group].reshape(-1, group)
        for k, column in enumerate(columns):
            np.add(grid[:, k], column, out=grid[:, k], casting="unsafe")
        return
    words = _checked_words(data, bits, count)
    width = _word_bits(bits)
    grid = total[: words.shape[0] * width].reshape(-1, width)
    for i, column in _columns(words, bits):
        np.add(grid[:, i], column, out=grid[:, i], casting="unsafe")
