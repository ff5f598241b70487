"""The model name and version of a KServe v2 gRPC request, read and rewritten without decoding tensors.

Every request the router routes (``ModelInferRequest``, ``ModelMetadataRequest``, ``ModelConfigRequest``,
``ModelReadyRequest``) carries the model name as field 1 and the version as field 2, both strings, at
the top level. Only the top-level fields are walked (each length-delimited field is skipped by its
length), so a request of megabytes of tensors costs a scan of a few field headers and one copy.
"""

from __future__ import annotations

NAME_FIELD = 1
VERSION_FIELD = 2
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class WireError(ValueError):
    """Bytes that are not a protobuf message."""


def _varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise WireError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _string_field(number: int, text: str) -> bytes:
    raw = text.encode()
    return _encode_varint(number << 3 | _LEN) + _encode_varint(len(raw)) + raw


def _fields(data: bytes) -> list[tuple[int, int, int, int]]:
    """(field number, start, value start, end) of each top-level field."""
    out, pos, view = [], 0, memoryview(data)
    while pos < len(data):
        start = pos
        key, pos = _varint(view, pos)
        number, kind = key >> 3, key & 7
        value = pos
        if kind == _VARINT:
            _, pos = _varint(view, pos)
        elif kind == _I64:
            pos += 8
        elif kind == _I32:
            pos += 4
        elif kind == _LEN:
            length, value = _varint(view, pos)
            pos = value + length
        else:
            raise WireError(f"unsupported wire type {kind}")
        if pos > len(data) or number == 0:
            raise WireError("truncated field")
        out.append((number, start, value, pos))
    return out


def model_of(data: bytes) -> tuple[str, str]:
    """The (model name, version) a request names ('' when absent; the last occurrence wins, as protobuf's)."""
    found = {NAME_FIELD: "", VERSION_FIELD: ""}
    for number, _, value, end in _fields(data):
        if number in found:
            try:
                found[number] = data[value:end].decode()
            except UnicodeDecodeError:
                raise WireError("model name or version is not UTF-8") from None
    return found[NAME_FIELD], found[VERSION_FIELD]


def with_model(data: bytes, name: str, version: str) -> bytes:
    """The request naming ``name`` at ``version`` instead; every other field's bytes unchanged."""
    parts = [_string_field(NAME_FIELD, name)]
    if version:
        parts.append(_string_field(VERSION_FIELD, version))
    kept = (data[start:end] for number, start, _, end in _fields(data) if number not in (NAME_FIELD, VERSION_FIELD))
    parts.extend(kept)
    return b"".join(parts)
