"""Bit packing of ring elements (protocols/secagg.md §4.3)."""

from __future__ import annotations

import numpy as np
import pytest

from securefed.errors import ProtocolError
from securefed.secagg.packing import PackedSum, pack, packed_size, unpack
from securefed.secagg.primitives import ring_dtype

BITS = [1, 2, 3, 7, 8, 12, 16, 26, 31, 32, 33, 48, 63, 64]
LENGTHS = [0, 1, 63, 64, 65, 130]


def _values(bits: int, count: int, seed: int) -> np.ndarray:
    data = np.random.default_rng(seed)
    raw = data.integers(0, 1 << 63, size=count, dtype=np.uint64) * np.uint64(2)
    raw |= data.integers(0, 2, size=count, dtype=np.uint64)
    if bits < 64:
        raw &= np.uint64((1 << bits) - 1)
    return raw.astype(ring_dtype(bits))


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("count", LENGTHS)
def test_round_trip(bits, count):
    values = _values(bits, count, seed=bits * 1000 + count)
    data = pack(values, bits)
    assert len(data) == packed_size(count, bits) == (count * bits + 7) // 8
    back = unpack(data, bits, count)
    assert back.dtype == ring_dtype(bits)
    np.testing.assert_array_equal(back, values)


@pytest.mark.parametrize("bits", [1, 31, 32, 33, 63, 64])
def test_extreme_values_round_trip(bits):
    top = (1 << bits) - 1
    values = np.array([top, 0, top, 1, top - 1] * 20, dtype=ring_dtype(bits))
    np.testing.assert_array_equal(unpack(pack(values, bits), bits, values.size), values)


def test_lsb_first_layout_hand_computed():
    # 3-bit values 5, 3, 7 fill bits 0-2, 3-5, 6-8 of the stream, least significant
    # bit first: byte 0 = bits 0..7 = 1,0,1, 1,1,0, 1,1 (LSB first) = 0b11011101;
    # byte 1 holds bit 8 (= 1) and seven zero padding bits.
    values = np.array([5, 3, 7], dtype=np.uint32)
    assert pack(values, 3) == b"\xdd\x01"
    # 12-bit values 0xABC, 0x123: the little-endian integer 0x123ABC.
    assert pack(np.array([0xABC, 0x123], dtype=np.uint32), 12) == bytes([0xBC, 0x3A, 0x12])
    # 1-bit values: bit i of the stream is value i.
    bits = np.array([1, 0, 0, 0, 0, 0, 0, 1, 1], dtype=np.uint32)
    assert pack(bits, 1) == bytes([0b10000001, 0b00000001])
    np.testing.assert_array_equal(unpack(b"\xdd\x01", 3, 3), values)


def test_wrong_length_is_rejected():
    data = pack(np.arange(10, dtype=np.uint32), 5)
    with pytest.raises(ProtocolError, match="length"):
        unpack(data + b"\x00", 5, 10)
    with pytest.raises(ProtocolError, match="length"):
        unpack(data[:-1], 5, 10)
    with pytest.raises(ProtocolError, match="length"):
        unpack(data, 5, 12)  # 60 bits need 8 bytes, not 7


def test_nonzero_padding_is_rejected():
    # 3 values of 3 bits = 9 bits: the last byte has 7 padding bits.
    with pytest.raises(ProtocolError, match="padding"):
        unpack(b"\xdd\x03", 3, 3)
    with pytest.raises(ProtocolError, match="padding"):
        unpack(b"\xdd\x81", 3, 3)


@pytest.mark.parametrize("count", [3, 8, 9])  # a partial group, a whole group, both (b = 5)
def test_values_that_do_not_fit_are_refused(count):
    values = np.zeros(count, dtype=np.uint32)
    values[-1] = 1 << 5  # one bit too wide: it would spill into the next element
    with pytest.raises(ValueError, match="fit"):
        pack(values, 5)
    assert pack(values - values, 5) == bytes(packed_size(count, 5))
    for bad in (values.astype(np.int64), values.astype(np.float64), values.reshape(1, -1)):
        with pytest.raises(ValueError, match="unsigned"):
            pack(bad, 5)


def test_bits_out_of_range():
    with pytest.raises(ValueError, match="bits"):
        pack(np.zeros(3, dtype=np.uint64), 65)
    with pytest.raises(ValueError, match="bits"):
        unpack(b"", 0, 0)


def _reference_unpack(data: bytes, bits: int, count: int) -> list[int]:
    # The layout of §4.3 read off one big little-endian integer: element i is
    # bits [i*b, (i+1)*b). Independent of both decoders in securefed.secagg.packing.
    stream = int.from_bytes(data, "little")
    mask = (1 << bits) - 1
    return [(stream >> (i * bits)) & mask for i in range(count)]


@pytest.mark.parametrize("bits", range(1, 65))
@pytest.mark.parametrize("count", [1, 7, 9, 65, 131])
def test_unpack_and_packed_sum_match_the_bitstream_for_every_width(bits, count):
    # Covers both decoding paths (strided byte loads for most widths, word columns
    # for b in {59, 61, 62, 63}) against a reference that shares no code with them.
    # Three all-ones vectors are summed too: every word load then carries set bits
    # of the neighbouring elements above bit b, which the sum must cancel exactly.
    vectors = [_values(bits, count, seed=bits * 7 + count + j) for j in range(3)]
    vectors += [np.full(count, (1 << bits) - 1, dtype=ring_dtype(bits))] * 3
    expected_sum = [0] * count
    summed = PackedSum(bits, count)
    for values in vectors:
        data = pack(values, bits)
        expected = _reference_unpack(data, bits, count)
        assert [int(v) for v in values] == expected
        assert [int(v) for v in unpack(data, bits, count)] == expected
        summed.add(data)
        expected_sum = [(a + e) % (1 << bits) for a, e in zip(expected_sum, expected, strict=True)]
    total = summed.total()
    assert total.dtype == ring_dtype(bits)
    assert [int(v) for v in total] == expected_sum
    assert [int(v) for v in summed.total()] == expected_sum  # total() does not disturb the sum


def test_packed_sum_rejects_a_bad_vector_and_keeps_its_sum():
    summed = PackedSum(3, 3)
    summed.add(b"\xdd\x01")  # 5, 3, 7
    for bad in (b"\xdd\x03", b"\xdd", b"\xdd\x01\x00"):
        with pytest.raises(ProtocolError):
            summed.add(bad)
    assert [int(v) for v in summed.total()] == [5, 3, 7]
    assert repr(summed) == "PackedSum(bits=3, count=3)"
    with pytest.raises(ValueError, match="bits"):
        PackedSum(65, 3)


def test_any_contiguous_buffer_is_read_as_its_bytes():
    # 4 values of 4 bits = 2 bytes: a uint16 view of them is one item but two bytes.
    values = np.array([1, 2, 3, 4], dtype=np.uint32)
    data = pack(values, 4)
    one_item = memoryview(np.frombuffer(data, dtype=np.uint16))
    assert len(one_item) == 1
    np.testing.assert_array_equal(unpack(one_item, 4, 4), values)
    summed = PackedSum(4, 4)
    summed.add(one_item)
    summed.add(memoryview(data))
    np.testing.assert_array_equal(summed.total(), 2 * values)
    for bad in (memoryview(data + data)[::2], "ab", 12):
        with pytest.raises(ProtocolError):
            summed.add(bad)  # type: ignore[arg-type]
        with pytest.raises(ProtocolError):
            unpack(bad, 4, 4)  # type: ignore[arg-type]
    np.testing.assert_array_equal(summed.total(), 2 * values)
