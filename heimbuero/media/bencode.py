"""Bencoding, as rtpengine's ng control protocol speaks it: integers, byte strings, lists and
dictionaries (keys are byte strings, sorted when encoded).

The decoder is strict and bounded (it reads replies off a UDP socket): the whole input must be
one value, nesting is limited, a length never reaches past the end, and a malformed input
raises :class:`BencodeError` rather than anything else.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 32


class BencodeError(ValueError):
    """The input is not one well-formed bencoded value."""


def encode(value: Any) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Any, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise BencodeError("bencode has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str | bytes):
        raw = value.encode() if isinstance(value, str) else value
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, list | tuple):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        items = [(k.encode() if isinstance(k, str) else k, v) for k, v in value.items()]
        for key, item in sorted(items):
            if not isinstance(key, bytes):
                raise BencodeError("dictionary keys must be strings")
            _encode(key, out)
            _encode(item, out)
        out.append(b"e")
    else:
        raise BencodeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes) -> Any:
    """One value (dictionary keys become str, strings stay bytes)."""
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError("trailing data after the value")
    return value


def _decode(data: bytes, i: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise BencodeError("nested too deeply")
    if i >= len(data):
        raise BencodeError("truncated")
    c = data[i]
    if c == ord("d"):
        out: dict[str, Any] = {}
        i += 1
        while True:
            if i >= len(data):
                raise BencodeError("truncated dictionary")
            if data[i] == ord("e"):
                return out, i + 1
            key, i = _decode(data, i, depth + 1)
            if not isinstance(key, bytes):
                raise BencodeError("dictionary key is no string")
            out[key.decode("utf-8", "replace")], i = _decode(data, i, depth + 1)
    if c == ord("l"):
        items: list[Any] = []
        i += 1
        while True:
            if i >= len(data):
                raise BencodeError("truncated list")
            if data[i] == ord("e"):
                return items, i + 1
            item, i = _decode(data, i, depth + 1)
            items.append(item)
    if c == ord("i"):
        end = data.find(b"e", i)
        if end < 0:
            raise BencodeError("truncated integer")
        return _int(data[i + 1 : end]), end + 1
    if ord("0") <= c <= ord("9"):
        colon = data.find(b":", i)
        if colon < 0 or colon - i > 10:
            raise BencodeError("bad string length")
        n = _int(data[i:colon])
        if n < 0 or colon + 1 + n > len(data):
            raise BencodeError("string reaches past the end")
        return data[colon + 1 : colon + 1 + n], colon + 1 + n
    raise BencodeError(f"unexpected byte {data[i : i + 1]!r} at {i}")


def _int(raw: bytes) -> int:
    if not raw or len(raw) > 20 or not raw.lstrip(b"-").isdigit():
        raise BencodeError(f"bad integer {raw[:20]!r}")
    return int(raw)
