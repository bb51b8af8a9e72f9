r"""Canonical JSON for ledger entry bodies (protocols/ledger.md §3).

The encoding is RFC 8785 (JSON Canonicalization Scheme) restricted to documents
that contain no JSON numbers: objects, arrays, strings, ``true``, ``false`` and
``null`` only. Every number travels as a decimal *string* with a fixed grammar
(:func:`uint_text`, :func:`decimal_text`), so no float formatting rule is ever
needed and a 64-bit integer survives any JSON parser. On this subset JCS is
simple and exact:

* object members sorted by their names compared as UTF-16 code units
  (RFC 8785 §3.2.3); duplicate names are impossible (a name occurs once);
* no whitespace; ``,`` and ``:`` as separators;
* strings escaped as ECMAScript ``JSON.stringify`` does (RFC 8785 §3.2.2.2):
  ``\"`` and ``\\``; ``\b \t \n \f \r``; every other U+0000..U+001F as
  ``\u00xx`` with lower-case hex; every other character literal;
* the result encoded as UTF-8; lone surrogates are refused.

So any RFC 8785 implementation produces the same bytes for these documents.
:func:`decode` accepts only bytes that :func:`encode` would produce.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import TypeAlias

from securefed.errors import DataError

__all__ = [
    "MAX_DEPTH",
    "MAX_UINT",
    "Body",
    "CanonicalValue",
    "decimal_text",
    "decode",
    "decode_object",
    "encode",
    "parse_decimal",
    "parse_uint",
    "to_canonical",
    "uint_text",
]

CanonicalValue: TypeAlias = (
    "str | bool | Sequence[CanonicalValue] | Mapping[str, CanonicalValue] | None"
)
"""What a body may contain: objects, arrays, strings, booleans and null (no numbers)."""
Body: TypeAlias = Mapping[str, CanonicalValue]

MAX_DEPTH = 32
"""Deepest nesting of objects and arrays accepted (bodies need 3; stops recursion bombs)."""
MAX_UINT = (1 << 64) - 1
"""Largest integer a uint string may name (u64, like the entry sequence number)."""

_ESCAPES = {i: f"\\u{i:04x}" for i in range(0x20)}
_ESCAPES.update(
    {
        0x08: "\\b",
        0x09: "\\t",
        0x0A: "\\n",
        0x0C: "\\f",
        0x0D: "\\r",
        ord('"'): '\\"',
        ord("\\"): "\\\\",
    }
)
_UINT = re.compile(r"0|[1-9][0-9]{0,19}")
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_MAX_DECIMAL_CHARS = 64


def _sort_key(name: str) -> bytes:
    # Big-endian UTF-16 bytes compare exactly as UTF-16 code units (RFC 8785 §3.2.3).
    return name.encode("utf-16-be", "surrogatepass")


def _string(value: str, out: list[str]) -> None:
    out.append('"')
    out.append(value.translate(_ESCAPES))
    out.append('"')


def _value(value: object, out: list[str], depth: int) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        _string(value, out)
    elif isinstance(value, Mapping):
        if depth >= MAX_DEPTH:
            raise ValueError(f"nesting deeper than {MAX_DEPTH}")
        names = list(value)
        if not all(isinstance(name, str) for name in names):
            raise ValueError("object member names must be strings")
        out.append("{")
        for i, name in enumerate(sorted(names, key=_sort_key)):
            if i:
                out.append(",")
            _string(name, out)
            out.append(":")
            _value(value[name], out, depth + 1)
        out.append("}")
    elif isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            raise ValueError(f"nesting deeper than {MAX_DEPTH}")
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _value(item, out, depth + 1)
        out.append("]")
    elif isinstance(value, int | float):
        raise TypeError(
            "numbers are not allowed in canonical bodies: use uint_text() or decimal_text()"
        )
    else:
        raise TypeError(f"cannot encode {type(value).__name__} canonically")


def encode(value: CanonicalValue) -> bytes:
    """The canonical UTF-8 bytes of ``value`` (protocols/ledger.md §3).

    Raises:
        TypeError: ``value`` holds a number or a type outside the canonical subset.
        ValueError: a lone surrogate in a string, or nesting deeper than ``MAX_DEPTH``.
    """
    out: list[str] = []
    _value(value, out, 0)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("strings must not contain lone surrogates") from None


def _refuse_number(text: str) -> object:
    raise DataError("numbers are not allowed in canonical bodies")


def _pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise DataError("duplicate object member name")
    return result


def decode(data: bytes) -> CanonicalValue:
    """Parse canonical bytes; anything :func:`encode` would not have produced is refused.

    Raises:
        DataError: not UTF-8, not JSON, a number, a duplicate name, or not canonical.
    """
    try:
        text = data.decode("utf-8")
        value: CanonicalValue = json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_int=_refuse_number,
            parse_float=_refuse_number,
            parse_constant=_refuse_number,
        )
        canonical = encode(value)
    except DataError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, TypeError, ValueError):
        raise DataError("not canonical JSON") from None
    if canonical != data:
        raise DataError("not canonical JSON")
    return value


def decode_object(data: bytes) -> dict[str, CanonicalValue]:
    """:func:`decode` for a document that must be an object (every entry body is).

    Raises:
        DataError: as :func:`decode`, or the document is not an object.
    """
    value = decode(data)
    if not isinstance(value, dict):
        raise DataError("canonical body must be a JSON object")
    return value


def uint_text(value: int) -> str:
    """A non-negative integer below 2^64 as its decimal string (no sign, no leading zero)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("uint_text takes an int")
    if not 0 <= value <= MAX_UINT:
        raise ValueError("value must be in [0, 2^64 - 1]")
    return str(value)


def parse_uint(text: object) -> int:
    """Inverse of :func:`uint_text`.

    Raises:
        DataError: ``text`` is not the decimal string of an integer in [0, 2^64 - 1].
    """
    if not isinstance(text, str) or _UINT.fullmatch(text) is None:
        raise DataError("not a canonical unsigned integer string")
    value = int(text)
    if value > MAX_UINT:
        raise DataError("unsigned integer out of range")
    return value


def decimal_text(value: float) -> str:
    """A finite real as Python's shortest round-trip ``repr`` (e.g. ``0.1``, ``1e-05``).

    Any string matching the grammar of protocols/ledger.md §3.3 is accepted by
    :func:`parse_decimal`; this is simply the spelling securefed writes.

    Raises:
        ValueError: ``value`` is NaN or infinite.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("decimal_text takes a float")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("NaN and infinities cannot be recorded")
    return repr(number)


def parse_decimal(text: object) -> float:
    """Parse a decimal string into the nearest IEEE 754 binary64 value.

    Raises:
        DataError: ``text`` does not match the grammar or overflows binary64.
    """
    if (
        not isinstance(text, str)
        or len(text) > _MAX_DECIMAL_CHARS
        or _DECIMAL.fullmatch(text) is None
    ):
        raise DataError("not a decimal number string")
    number = float(text)
    if not math.isfinite(number):
        raise DataError("decimal number out of range")
    return number


def to_canonical(value: object) -> CanonicalValue:
    """Convert plain Python data (e.g. a resolved configuration) into a canonical value.

    Mappings with string keys, lists and tuples are converted recursively; ints
    become their decimal strings (a sign allowed), floats :func:`decimal_text`,
    enums their value (converted in turn); strings, booleans and ``None`` stay.

    Raises:
        TypeError: a key is not a string, or a value has another type.
        ValueError: a float is NaN or infinite.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, Enum):
        return to_canonical(value.value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return decimal_text(value)
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("mapping keys must be strings")
        return {k: to_canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_canonical(v) for v in value]
    raise TypeError(f"cannot convert {type(value).__name__} to a canonical value")
