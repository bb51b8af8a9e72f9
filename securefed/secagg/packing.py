"""Bit packing of ring elements for the wire (protocols/secagg.md §4.3).

Element ``i`` of a vector of ``b``-bit values occupies bits ``[i*b, (i+1)*b)`` of
the packed string, where bit ``j`` of byte ``k`` is bit number ``8k + j`` (least
significant first). The packed length is ``ceil(count * b / 8)`` bytes; unused
high bits of the last byte are zero and are checked on unpacking.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
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
    """Pack ``values`` into ``packed_size(len(values), bits)`` bytes.

    Raises:
        ValueError: ``bits`` outside [1, 64], ``values`` not a 1-D unsigned
            vector, or a value of ``2^bits`` or more (it would run into its
            neighbour's bits).
    """
    if not 1 <= bits <= 64:
        raise ValueError("bits must be in [1, 64]")
    if values.dtype.kind != "u" or values.ndim != 1:
        raise ValueError("pack takes a 1-D vector of unsigned integers")
    count = int(values.shape[0])
    if count and bits < 64 and int(values.max()) >> bits:
        raise ValueError(f"a value does not fit in {bits} bits")
    word = ring_dtype(bits)
    if bits in (32, 64):
        return values.astype(np.dtype(word).newbyteorder("<"), copy=False).tobytes()
    group, group_bytes, stores = _pack_plan(bits)
    full = count // group
    out = bytearray(packed_size(count, bits))
    if full:
        # Column k = element k of every whole group, contiguous, so each piece below
        # is one contiguous shift; each store is one strided write of every group.
        columns = np.ascontiguousarray(values[: full * group].reshape(full, group).T, dtype=word)
        store, piece = np.empty(full, dtype=word), np.empty(full, dtype=word)
        for offset, store_type, pieces in stores:
            for i, (k, shift) in enumerate(pieces):
                target = piece if i else store
                if shift > 0:
                    np.left_shift(columns[k], word(shift), out=target)
                elif shift < 0:
                    np.right_shift(columns[k], word(-shift), out=target)
                else:
                    np.copyto(target, columns[k])
                if i:
                    np.bitwise_or(store, piece, out=store)
            written = np.ndarray(
                (full,), dtype=store_type, buffer=out, offset=offset, strides=(group_bytes,)
            )
            np.copyto(written, store, casting="unsafe")  # keeps the store's low bytes
    if full * group < count:  # the last, partial group: its bits as one integer
        tail = values[full * group :].tolist()
        number = sum(int(v) << (i * bits) for i, v in enumerate(tail))
        out[full * group_bytes :] = number.to_bytes(len(out) - full * group_bytes, "little")
    return bytes(out)


@functools.lru_cache(maxsize=64)
def _pack_plan(
    bits: int,
) -> tuple[int, int, tuple[tuple[int, np.dtype[Any], tuple[tuple[int, int], ...]], ...]]:
    """``(g, group_bytes, stores)``: how :func:`pack` writes one group of ``g`` elements.

    ``g = 8 / gcd(b, 8)`` elements fill exactly ``g*b/8`` bytes, so every group
    starts on a byte. The group's bytes are cut into stores of 4, 2 and 1 bytes
    (8, 4, 2, 1 when b > 32: the ring word), each ``(offset, dtype, pieces)``:
    bytes ``[offset, offset + size)`` of every group, the OR of the ``pieces``
    ``(k, shift)``, element ``k`` shifted left by ``shift`` bits (right when
    negative), cut to the store's size.
    """
    group, group_bytes = _group(bits)
    largest = 4 if bits <= 32 else 8
    stores = []
    offset = 0
    while offset < group_bytes:
        size = next(w for w in (8, 4, 2, 1) if w <= largest and w <= group_bytes - offset)
        low, high = 8 * offset, 8 * (offset + size)
        pieces = tuple(
            (k, k * bits - low) for k in range(group) if k * bits < high and (k + 1) * bits > low
        )
        stores.append((offset, np.dtype(f"<u{size}"), pieces))
        offset += size
    return group, group_bytes, tuple(stores)


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


def _group(bits: int) -> tuple[int, int]:
    """``(g, g*b/8)``: the fewest elements, ``g = 8 / gcd(b, 8)``, that fill whole bytes."""
    group = 8 // math.gcd(bits, 8)
    return group, group * bits // 8


def _strided(bits: int, count: int) -> bool:
    # Every element plus its bit offset in its first byte must fit one 64-bit load;
    # offsets are multiples of gcd(b, 8), the largest is 8 - gcd(b, 8).
    return count > 0 and bits + 8 - math.gcd(bits, 8) <= 64


@dataclass(frozen=True, slots=True)
class _Run:
    """Columns ``first:end`` of the strided decoding, read as one 2-D load.

    ``parts`` are ``(row, rows, in_tail, start)``: groups ``row:row + rows`` are
    read from byte ``start`` of the packed vector, or of its zero-padded tail copy
    when ``in_tail``; consecutive columns are ``step`` bytes apart and groups
    ``group_bytes`` apart, in words of dtype ``word``. ``shifts`` are the
    columns' right shifts as a ``(columns, 1)`` array, ``None`` when all are zero.
    """

    first: int
    end: int
    step: int
    word: np.dtype[Any]
    shifts: npt.NDArray[Any] | None
    parts: tuple[tuple[int, int, bool, int], ...]


@dataclass(frozen=True, slots=True)
class _Layout:
    """How :func:`_strided_loads` reads ``count`` packed elements of ``bits`` bits.

    Element ``i`` starts in byte ``(i*b) // 8`` at bit ``(i*b) % 8``; with
    ``g = 8 / gcd(b, 8)`` elements per ``g*b/8`` bytes, every ``g``-th element starts
    at the same bit offset, so column ``k`` (elements ``k::g``) is one strided,
    unaligned load of little-endian words at byte ``offset_k`` whose bits from
    ``shift_k`` up hold the elements, followed by other bits above bit
    ``shift_k + b``. Consecutive columns with the same word size whose offsets
    are evenly spaced form a :class:`_Run`, read as one ``(columns, groups)``
    view: for b = 26 the four columns sit at bytes 0, 3, 6, 9, one run. The
    groups whose words lie inside the packed vector are read in place, the last
    few from a zero-padded copy of its bytes from ``tail_from`` on
    (``tail_bytes`` long). Needs ``b + 8 - gcd(b, 8) <= 64``.
    """

    group: int
    group_bytes: int
    groups: int
    tail_from: int
    tail_bytes: int
    runs: tuple[_Run, ...]


@functools.lru_cache(maxsize=64)
def _layout(bits: int, count: int) -> _Layout:
    """The :class:`_Layout` of ``count`` elements of ``bits`` bits (see there)."""
    group, group_bytes = _group(bits)
    groups = -(-count // group)
    size = packed_size(count, bits)
    columns = []
    for k in range(group):
        offset, shift = divmod(k * bits, 8)
        columns.append((offset, shift, np.dtype("<u4" if shift + bits <= 32 else "<u8")))
    spans = []  # (first, end, step)
    first = 0
    while first < group:
        end, step = first + 1, 0
        if end < group and columns[end][2] == columns[first][2]:
            step = columns[end][0] - columns[first][0]
            while (
                end < group
                and columns[end][2] == columns[first][2]
                and columns[end][0] - columns[end - 1][0] == step
            ):
                end += 1
        spans.append((first, end, step))
        first = end
    inside = []  # per run, the groups whose every word lies inside the packed vector
    for _, end, _ in spans:
        last, _, word = columns[end - 1]
        room = size - last - word.itemsize
        inside.append(0 if room < 0 else min(groups, room // group_bytes + 1))
    lowest = min(inside)
    runs = []
    for (first, end, step), rows in zip(spans, inside, strict=True):
        offset, _, word = columns[first]
        # Cached and shared by every caller: read-only, over an immutable bytes object.
        shifts = np.frombuffer(
            np.array([shift for _, shift, _ in columns[first:end]], dtype=word).tobytes(),
            dtype=word,
        )
        parts = (
            (0, rows, False, offset),
            (rows, groups - rows, True, (rows - lowest) * group_bytes + offset),
        )
        runs.append(
            _Run(
                first=first,
                end=end,
                step=step,
                word=word,
                shifts=shifts.reshape(-1, 1) if shifts.any() else None,
                parts=tuple(part for part in parts if part[1]),
            )
        )
    # Every load of a run's last groups ends within group_bytes + 8 bytes of its group.
    return _Layout(
        group=group,
        group_bytes=group_bytes,
        groups=groups,
        tail_from=lowest * group_bytes,
        tail_bytes=(groups - lowest) * group_bytes + 8,
        runs=tuple(runs),
    )


def _strided_loads(
    data: memoryview, layout: _Layout, tail: npt.NDArray[np.uint8]
) -> Iterator[tuple[_Run, list[tuple[int, npt.NDArray[Any]]]]]:
    """Byte-aligned strided word loads, one :class:`_Run` at a time.

    Yields ``(run, parts)``, the load as ``(row, words)`` parts, ``words`` of shape
    ``(run.end - run.first, rows)`` holding groups ``row:row + rows``. ``data`` is
    the byte view :func:`_check` returned; ``tail`` is a buffer of
    ``layout.tail_bytes`` bytes. Its bytes past the copy need not be zero: a load
    reads them only above an element's bits (bits a decoder masks off and a sum
    drops in its reduction modulo ``2^b``).
    """
    raw = np.frombuffer(data, dtype=np.uint8)
    tail[: raw.size - layout.tail_from] = raw[layout.tail_from :]
    buffers = (raw, tail)
    for run in layout.runs:
        yield (
            run,
            [
                (
                    row,
                    np.ndarray(
                        (run.end - run.first, rows),
                        dtype=run.word,
                        buffer=buffers[in_tail],
                        offset=start,
                        strides=(run.step, layout.group_bytes),
                    ),
                )
                for row, rows, in_tail, start in run.parts
            ],
        )


def unpack(data: bytes | memoryview, bits: int, count: int) -> RingArray:
    """Inverse of :func:`pack`.

    Raises:
        ProtocolError: wrong length or non-zero padding bits.
    """
    if _strided(bits, count):
        layout = _layout(bits, count)
        values = np.empty((layout.groups, layout.group), dtype=ring_dtype(bits))
        mask = (1 << bits) - 1
        tail = np.zeros(layout.tail_bytes, dtype=np.uint8)
        for run, parts in _strided_loads(_check(data, bits, count), layout, tail):
            for row, words in parts:
                block = words if run.shifts is None else words >> run.shifts
                if bits < 8 * block.itemsize:
                    block = block & block.dtype.type(mask)
                values[row : row + block.shape[1], run.first : run.end] = block.T
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
    column-major, one contiguous row per column (elements ``k::g``), so each
    :class:`_Run` adds into a block of whole rows: one 2-D shift and one 2-D add
    per run, not per column.

    Args:
        bits: element width ``b`` (1 to 64).
        count: elements per vector.
    """

    __slots__ = ("_acc", "_bits", "_count", "_layout", "_scratch", "_tail")

    def __init__(self, bits: int, count: int) -> None:
        if not 1 <= bits <= 64:
            raise ValueError("bits must be in [1, 64]")
        if count < 0:
            raise ValueError("count must be non-negative")
        self._bits = bits
        self._count = count
        self._layout = _layout(bits, count) if _strided(bits, count) else None
        dtype = ring_dtype(bits)
        self._scratch: dict[int, npt.NDArray[np.unsignedinteger[Any]]] = {}
        self._tail = np.zeros(0 if self._layout is None else self._layout.tail_bytes, np.uint8)
        if self._layout is not None:
            shape = (self._layout.group, self._layout.groups)
            self._acc: RingArray = np.zeros(shape, dtype=dtype)
            widest: dict[np.dtype[Any], int] = {}
            for run in self._layout.runs:
                widest[run.word] = max(widest.get(run.word, 0), run.end - run.first)
            self._scratch = {
                word.itemsize: np.empty((columns, shape[1]), dtype=word)
                for word, columns in widest.items()
            }
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
        if self._layout is not None:
            view = _check(data, bits, count)
            for run, parts in _strided_loads(view, self._layout, self._tail):
                first, end = run.first, run.end
                for row, words in parts:
                    rows = self._acc[first:end, row : row + words.shape[1]]
                    if run.shifts is None:
                        np.add(rows, words, out=rows, casting="unsafe")
                        continue
                    scratch = self._scratch[words.itemsize][: end - first, : words.shape[1]]
                    np.right_shift(words, run.shifts, out=scratch)
                    np.add(rows, scratch, out=rows, casting="unsafe")
            return
        words = _checked_words(data, bits, count)
        for i, column in _columns(words, bits):
            np.add(self._acc[:, i], column, out=self._acc[:, i], casting="unsafe")

    def total(self) -> RingArray:
        """The sum so far, ``count`` elements in order, reduced modulo ``2^bits`` (a new array)."""
        if self._layout is not None:
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
