"""Byte encoding shared by every secure-aggregation message (protocols/secagg.md §4).

Integers are unsigned big-endian of a fixed width; variable-length byte strings
carry a u32 length prefix; lists carry a u32 count prefix. Readers reject
trailing bytes, short input and oversized counts with :class:`ProtocolError`.
"""

from __future__ import annotations

import functools
import struct
from typing import Any

from securefed.errors import ProtocolError

__all__ = ["Reader", "Writer"]

MAX_LIST_ITEMS = 1 << 20
"""Upper bound on any list count in a message (about 10^6 clients): stops memory blow-ups."""

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


@functools.lru_cache(maxsize=32)
def _compiled(fmt: str) -> struct.Struct:
    """A record format, compiled once (every message of a type reuses it)."""
    return struct.Struct(fmt)


class Writer:
    """Append-only byte builder."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> Writer:
        """Append one byte."""
        self._parts.append(struct.pack(">B", value))
        return self

    def u32(self, value: int) -> Writer:
        """Append a 32-bit unsigned integer."""
        self._parts.append(struct.pack(">I", value))
        return self

    def u64(self, value: int) -> Writer:
        """Append a 64-bit unsigned integer."""
        self._parts.append(struct.pack(">Q", value))
        return self

    def fixed(self, data: bytes, length: int) -> Writer:
        """Append exactly ``length`` bytes."""
        if len(data) != length:
            raise ValueError(f"expected {length} bytes, got {len(data)}")
        self._parts.append(bytes(data))
        return self

    def var(self, data: bytes | memoryview) -> Writer:
        """Append a u32 length prefix and the bytes."""
        self.u32(len(data))
        self._parts.append(bytes(data))
        return self

    def text(self, value: str) -> Writer:
        """Append UTF-8 text as variable bytes."""
        return self.var(value.encode("utf-8"))

    def getvalue(self) -> bytes:
        """Return everything written so far."""
        return b"".join(self._parts)


class Reader:
    """Cursor over an encoded message; every failure is a :class:`ProtocolError`."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ProtocolError("message must be bytes")
        self._data = bytes(data)
        self._pos = 0

    def _advance(self, n: int) -> int:
        """Consume ``n`` bytes; return where they start."""
        start, end = self._pos, self._pos + n
        if n < 0 or end > len(self._data):
            raise ProtocolError("message is truncated")
        self._pos = end
        return start

    def _take(self, n: int) -> bytes:
        start = self._advance(n)
        return self._data[start : start + n]

    def u8(self) -> int:
        """Read one byte."""
        return int(self._take(1)[0])

    def u32(self) -> int:
        """Read a 32-bit unsigned integer."""
        return int(_U32.unpack_from(self._data, self._advance(4))[0])

    def u64(self) -> int:
        """Read a 64-bit unsigned integer."""
        return int(_U64.unpack_from(self._data, self._advance(8))[0])

    def fixed(self, length: int) -> bytes:
        """Read exactly ``length`` bytes."""
        return self._take(length)

    def var(self, max_length: int = 1 << 31) -> bytes:
        """Read a u32-length-prefixed byte string."""
        length = self.u32()
        if length > max_length:
            raise ProtocolError("field is longer than allowed")
        return self._take(length)

    def var_view(self) -> memoryview:
        """Read a u32-length-prefixed byte string as a read-only view (no copy).

        For bulk fields such as a masked vector: the view keeps the whole message alive.
        """
        length = self.u32()
        start = self._advance(length)
        return memoryview(self._data)[start : start + length]

    def text(self, max_length: int = 1 << 16) -> str:
        """Read UTF-8 text."""
        try:
            return self.var(max_length).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("text field is not UTF-8") from None

    def count(self) -> int:
        """Read a list count (bounded by :data:`MAX_LIST_ITEMS`)."""
        n = self.u32()
        if n > MAX_LIST_ITEMS:
            raise ProtocolError("list is longer than allowed")
        return n

    def fields(self, layout: struct.Struct) -> tuple[Any, ...]:
        """Read one fixed-size record of ``layout`` (several fields in one step)."""
        return layout.unpack_from(self._data, self._advance(layout.size))

    def records(self, fmt: str) -> list[tuple[Any, ...]]:
        """Read a u32 count, then that many fixed-size records of struct format ``fmt``."""
        layout = _compiled(fmt)
        n = self.count()
        return list(layout.iter_unpack(self._take(n * layout.size))) if n else []

    def done(self) -> None:
        """Require that the whole message was consumed."""
        if self._pos != len(self._data):
            raise ProtocolError("message has trailing bytes")
