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

__all__ = ["PackedSum", "pack", "packed_size", "unpack"]


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


def _word_bits(bits: int) -> int:
    # Decode with 32-bit words when elements fit: half the column passes of 64-bit
    # words. The bit layout is the same either way (little-endian, LSB first).
    return 32 if bits <= 32 else 64


def _check(data: bytes | memoryview, bits: int, count: int) -> memoryview:
    """Validate a packed vector's length and padding bits; return it as a byte view.

    Any contiguous buffer is read as its bytes (a memoryview of another item size
    is measured in bytes, not items).
    """
    if not 1 <= bits <= 64:
        raise ValueError("bits must be in [1, 64]")
    try:
        view = memoryview(data)
    except TypeError:
        raise ProtocolError("packed vector must be bytes") from None
    if not view.c_contiguous:
        raise ProtocolError("packed vector is not contiguous")
    view = view.cast("B")
    if view.nbytes != packed_size(count, bits):
        raise ProtocolError("packed vector has the wrong length")
    total_bits = count * bits
    if total_bits % 8 and view[-1] >> (total_bits % 8):
        raise ProtocolError("packed vector has non-zero padding bits")
    return view


def _checked_words(
    data: bytes | memoryview, bits: int, count: int
) -> npt.NDArray[np.unsignedinteger[Any]]:
    """Validate a packed vector and view it as words, one row of ``bits`` words per group."""
    view = _check(data, bits, count)
    width = _word_bits(bits)
    groups = -(-count // width)
    words = np.zeros(groups * bits, dtype="<u4" if width == 32 else "<u8")
    words.view(np.uint8)[: view.nbytes] = np.frombuffer(view, dtype=np.uint8)
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


def _strided_loads(
    data: memoryview, bits: int, count: int
) -> Iterator[tuple[int, list[npt.NDArray[np.unsignedinteger[Any]]]]]:
    """Byte-aligned strided word loads: per column ``k``, ``(shift, parts)``.

    Element ``i`` starts in byte ``(i*b) // 8`` at bit ``(i*b) % 8``; with
    ``g = 8 / gcd(b, 8)`` elements per ``g*b/8`` bytes, every ``g``-th element starts
    at the same bit offset, so column ``k`` (elements ``k::g``) is one strided,
    unaligned load of little-endian words whose bits from ``shift`` up hold the
    elements, followed by other bits above bit ``shift + b``. ``parts`` are that
    load in order: the rows whose word lies inside ``data`` are read in place,
    the last few from a zero-padded copy of the tail. Needs
    ``b + 8 - gcd(b, 8) <= 64``. ``data`` is the byte view :func:`_check` returned.
    """
    group = 8 // math.gcd(bits, 8)
    group_bytes = group * bits // 8
    groups = -(-count // group)
    raw = np.frombuffer(data, dtype=np.uint8)
    layout = []
    for k in range(group):
        offset, shift = divmod(k * bits, 8)
        word_type = "<u4" if shift + bits <= 32 else "<u8"
        room = raw.size - offset - np.dtype(word_type).itemsize
        inside = 0 if room < 0 else min(groups, room // group_bytes + 1)
        layout.append((offset, shift, word_type, inside))
    first = min(inside for *_, inside in layout)
    tail = np.zeros((groups - first) * group_bytes + 8, dtype=np.uint8)
    tail[: raw.size - first * group_bytes] = raw[first * group_bytes :]
    for offset, shift, word_type, inside in layout:
        parts = [
            np.ndarray(
                (rows,), dtype=word_type, buffer=buffer, offset=start, strides=(group_bytes,)
            )
            for rows, buffer, start in (
                (inside, raw, offset),
                (groups - inside, tail, (inside - first) * group_bytes + offset),
            )
            if rows
        ]
        yield shift, parts


def _strided_columns(data: memoryview, bits: int, count: int) -> tuple[int, Iterator[RingArray]]:
    """Decode by strided loads: ``(g, columns)``, column ``k`` = elements ``k::g`` (see above)."""

    def columns() -> Iterator[RingArray]:
        for shift, parts in _strided_loads(data, bits, count):
            column = np.concatenate([part >> part.dtype.type(shift) for part in parts])
            # (count > 0 here, so ``parts`` is never empty)
            if shift + bits != 8 * column.itemsize:
                column &= column.dtype.type((1 << bits) - 1)
            yield column

    return 8 // math.gcd(bits, 8), columns()


def unpack(data: bytes | memoryview, bits: int, count: int) -> RingArray:
    """Inverse of :func:`pack`.

    Raises:
        ProtocolError: wrong length or non-zero padding bits.
    """
    if _strided(bits, count):
        group, columns = _strided_columns(_check(data, bits, count), bits, count)
        values = np.empty((-(-count // group), group), dtype=ring_dtype(bits))
        for k, column in enumerate(columns):
            values[:, k] = column
        return values.reshape(-1)[:count]
    words = _checked_words(data, bits, count)
    values = np.empty((words.shape[0], _word_bits(bits)), dtype=ring_dtype(bits))
    for i, column in _columns(words, bits):
        values[:, i] = column
    return values.reshape(-1)[:count]


class PackedSum:
    """The running sum, modulo ``2^bits``, of packed vectors of ``count`` elements.

    The server's accumulator (§7): :meth:`add` decodes one packed vector straight
    into the sum, so no client's vector is materialised on its own. Elements are
    added modulo the word of :func:`ring_dtype` (``2^32`` or ``2^64``, which ``2^b``
    divides) without first cutting each one to ``b`` bits: the bits a word load
    picks up above an element are multiples of ``2^b`` and vanish in the one
    reduction :meth:`total` makes. With strided decoding the sum is kept
    column-major, one contiguous row per column of :func:`_strided_columns`, so
    each add is a contiguous pass.

    Args:
        bits: element width ``b`` (1 to 64).
        count: elements per vector.
    """

    __slots__ = ("_acc", "_bits", "_count", "_scratch", "_strided")

    def __init__(self, bits: int, count: int) -> None:
        if not 1 <= bits <= 64:
            raise ValueError("bits must be in [1, 64]")
        if count < 0:
            raise ValueError("count must be non-negative")
        self._bits = bits
        self._count = count
        self._strided = _strided(bits, count)
        dtype = ring_dtype(bits)
        self._scratch: dict[int, npt.NDArray[np.unsignedinteger[Any]]] = {}
        if self._strided:
            group = 8 // math.gcd(bits, 8)
            groups = -(-count // group)
            self._acc: RingArray = np.zeros((group, groups), dtype=dtype)
            self._scratch = {4: np.empty(groups, np.uint32), 8: np.empty(groups, np.uint64)}
        else:
            width = _word_bits(bits)
            self._acc = np.zeros((-(-count // width), width), dtype=dtype)

    def __repr__(self) -> str:
        return f"PackedSum(bits={self._bits}, count={self._count})"

    def add(self, data: bytes | memoryview) -> None:
        """Add one packed vector.

        Raises:
            ProtocolError: wrong length or non-zero padding bits (the sum is unchanged).
        """
        bits, count = self._bits, self._count
        if self._strided:
            view = _check(data, bits, count)
            for k, (shift, parts) in enumerate(_strided_loads(view, bits, count)):
                start = 0
                for loaded in parts:
                    row = self._acc[k, start : start + loaded.size]
                    start += loaded.size
                    if shift:
                        scratch = self._scratch[loaded.itemsize][: loaded.size]
                        np.right_shift(loaded, loaded.dtype.type(shift), out=scratch)
                        np.add(row, scratch, out=row, casting="unsafe")
                    else:
                        np.add(row, loaded, out=row, casting="unsafe")
            return
        words = _checked_words(data, bits, count)
        for i, column in _columns(words, bits):
            np.add(self._acc[:, i], column, out=self._acc[:, i], casting="unsafe")

    def total(self) -> RingArray:
        """The sum so far, ``count`` elements in order, reduced modulo ``2^bits`` (a new array)."""
        if self._strided:
            # Interleave the columns back into element order, one strided write per
            # column (about 3x faster than copying the transposed grid).
            group, groups = self._acc.shape
            grid = np.empty((groups, group), dtype=self._acc.dtype)
            for k in range(group):
                grid[:, k] = self._acc[k]
            out: RingArray = grid.reshape(-1)[: self._count]
        else:
            out = self._acc.reshape(-1)[: self._count].copy()
        if self._bits not in (32, 64):
            out &= out.dtype.type((1 << self._bits) - 1)
        return out
