"""An independent view of the wire: ``protoc --decode_raw`` and a checker against tables.

``decode_raw`` knows nothing of our .proto files: it prints field numbers and raw
values. ``fill`` sets every field of a message (one member per oneof, chosen by
``variant``) to a value that names the field, and ``check`` verifies that each set
field sits under the number a table gives for its name, with its value.
"""

from __future__ import annotations

import codecs
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

Raw = dict[int, list[Any]]  # number -> values: int, Fixed, bytes or a nested Raw


class Fixed(int):
    """A fixed32/fixed64 value (decode_raw prints it in hex, 8 or 16 digits)."""

    bits: int

    def __new__(cls, value: int, bits: int) -> Fixed:
        made = super().__new__(cls, value)
        made.bits = bits
        return made


_OPEN = re.compile(r"(\d+) \{")
_VALUE = re.compile(r"(\d+): (.*)")


def protoc_command() -> list[str] | None:
    """A protoc to decode with: Debian's if installed, else grpcio-tools' (None: neither)."""
    found = shutil.which("protoc")
    if found:
        return [found]
    try:
        import grpc_tools  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "grpc_tools.protoc"]


def decode_raw(data: bytes) -> Raw:
    """Decode ``data`` with ``protoc --decode_raw`` into nested number -> values."""
    command = protoc_command()
    assert command is not None
    done = subprocess.run(
        [*command, "--decode_raw"], input=data, capture_output=True, check=True, timeout=60
    )
    return parse(done.stdout.decode())


def parse(text: str) -> Raw:
    """Parse decode_raw's text: ``N { ... }`` nests, ``N: value`` is an int or a C string."""
    stack: list[Raw] = [{}]
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if s == "}":
            stack.pop()
            continue
        if opened := _OPEN.fullmatch(s):
            child: Raw = {}
            stack[-1].setdefault(int(opened[1]), []).append(child)
            stack.append(child)
            continue
        value = _VALUE.fullmatch(s)
        assert value is not None, f"unexpected decode_raw line {s!r}"
        text_value = value[2]
        parsed: Any
        if text_value.startswith('"'):
            parsed = codecs.escape_decode(text_value[1:-1])[0]
        elif text_value.startswith("0x"):
            parsed = Fixed(int(text_value, 16), 32 if len(text_value) <= 10 else 64)
        else:
            parsed = int(text_value)
        stack[-1].setdefault(int(value[1]), []).append(parsed)
    assert len(stack) == 1, "unbalanced decode_raw output"
    return stack[0]


def _varints(values: list[int]) -> bytes:
    out = bytearray()
    for v in values:
        while True:
            low = v & 0x7F
            v >>= 7
            out.append(low | (0x80 if v else 0))
            if not v:
                break
    return bytes(out)


def encode(raw: Raw) -> bytes:
    """Serialize a decoded tree again (canonically), to read a string decode_raw nested."""
    out = bytearray()
    for number, values in sorted(raw.items()):
        for value in values:
            if isinstance(value, Fixed):
                out += _varints([number << 3 | (5 if value.bits == 32 else 1)])
                out += int(value).to_bytes(value.bits // 8, "little")
            elif isinstance(value, int):
                out += _varints([number << 3]) + _varints([value])
            else:
                body = value if isinstance(value, bytes) else encode(value)
                out += _varints([number << 3 | 2, len(body)]) + body
    return bytes(out)


def as_bytes(value: Any) -> Any:
    """A length-delimited value as bytes, whether decode_raw printed it as a string or nested."""
    return encode(value) if isinstance(value, dict) else value


# Values are chosen so that decode_raw never mistakes them for nested messages: a
# first byte with wire type 6 or 7 (invalid) keeps strings and packed ints as strings.
def _scalar(field: Any) -> Any:  # a FieldDescriptor (the stubs have two kinds of it)
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return f"~{field.name}"
    if t == FieldDescriptor.TYPE_BYTES:
        return b"\x0f" + field.name.encode()
    if t == FieldDescriptor.TYPE_BOOL:
        return True
    if t == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return max(v.number for v in field.enum_type.values)
    if field.is_repeated:
        return 15  # packed: one byte 0x0f
    return 100 + field.number


def _fill_well_known(msg: Message) -> bool:
    name = msg.DESCRIPTOR.full_name
    if name == "google.protobuf.Any":
        msg.type_url = "~type"  # type: ignore[attr-defined]
        msg.value = b"\x0fvalue"  # type: ignore[attr-defined]
    elif name == "google.protobuf.Struct":
        msg.fields["~key"].string_value = "~value"  # type: ignore[attr-defined]
    elif name in ("google.protobuf.Duration", "google.protobuf.Timestamp"):
        msg.seconds = 7  # type: ignore[attr-defined]
    elif name.startswith("google.protobuf.") and name.endswith("Value"):
        msg.value = 7  # type: ignore[attr-defined]
    elif name == "google.protobuf.Empty":
        msg.SetInParent()
    else:
        return False
    return True


def fill(msg: Message, variant: int = 0, depth: int = 0) -> None:
    """Set every field of ``msg`` (the ``variant``-th member of each oneof)."""
    assert depth < 12, "message nesting too deep"
    if _fill_well_known(msg):
        return
    desc = msg.DESCRIPTOR
    for field in desc.fields:
        oneof = field.containing_oneof
        if oneof is not None and oneof.fields[variant % len(oneof.fields)] is not field:
            continue
        value = getattr(msg, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field, value_field = field.message_type.fields
            key = _scalar(key_field)
            if value_field.message_type is not None:
                fill(value[key], variant, depth + 1)
            else:
                value[key] = _scalar(value_field)
        elif field.message_type is not None:
            sub = value.add() if field.is_repeated else value
            fill(sub, variant, depth + 1)
            sub.SetInParent()
        elif field.is_repeated:
            value.append(_scalar(field))
        else:
            setattr(msg, field.name, _scalar(field))


def _expected_scalar(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_STRING:
        return value.encode()
    if field.type == FieldDescriptor.TYPE_BYTES:
        return value
    return int(value)


def check(
    raw: Raw,
    msg: Message,
    tables: Mapping[str, Mapping[str, int]],
    covered: set[tuple[str, str]] | None = None,
    path: str = "",
) -> list[str]:
    """Differences between ``raw`` and the numbers ``tables`` give for ``msg``'s set fields."""
    desc = msg.DESCRIPTOR
    where = path or desc.full_name
    if desc.full_name.startswith("google.protobuf."):
        return []  # well-known types: their numbers are protobuf's own
    table = tables.get(desc.full_name)
    if table is None:
        return [f"{where}: no table for {desc.full_name}"]
    errors: list[str] = []
    expected_numbers = set()
    for field, value in msg.ListFields():
        at = f"{where}.{field.name}"
        number = table.get(field.name)
        if number is None:
            errors.append(f"{at}: not in the published message")
            continue
        expected_numbers.add(number)
        if covered is not None:
            covered.add((desc.full_name, field.name))
        found = raw.get(number)
        if found is None:
            errors.append(f"{at}: nothing on the wire at field {number}")
            continue
        errors += _check_values(found, field, value, tables, covered, at)
    extra = set(raw) - expected_numbers
    if extra:
        errors.append(f"{where}: unexpected field numbers on the wire {sorted(extra)}")
    return errors


def _as_raw(value: Any) -> Raw:
    return {} if value == b"" else value  # an empty message prints as ""


def _check_values(
    found: list[Any],
    field: FieldDescriptor,
    value: Any,
    tables: Mapping[str, Mapping[str, int]],
    covered: set[tuple[str, str]] | None,
    at: str,
) -> list[str]:
    repeated = field.is_repeated
    entry_type = field.message_type
    if entry_type is not None and entry_type.GetOptions().map_entry:
        key_field, value_field = entry_type.fields
        errors = []
        for (key, item), entry in zip(sorted(value.items()), found, strict=True):
            entry = _as_raw(entry)
            if entry.get(1) != [_expected_scalar(key_field, key)]:
                errors.append(f"{at}: map key {entry.get(1)} != {key!r}")
            if value_field.message_type is not None:
                errors += check(_as_raw(entry[2][0]), item, tables, covered, f"{at}[{key}]")
            elif entry.get(2) != [_expected_scalar(value_field, item)]:
                errors.append(f"{at}[{key}]: {entry.get(2)} != {item!r}")
        return errors
    if entry_type is not None:
        items = list(value) if repeated else [value]
        if len(items) != len(found):
            return [f"{at}: {len(found)} values on the wire, {len(items)} set"]
        errors = []
        for item, entry in zip(items, found, strict=True):
            if not isinstance(entry, dict | bytes):
                return [f"{at}: {entry!r} is not a message"]
            errors += check(_as_raw(entry), item, tables, covered, at)
        return errors
    if repeated and field.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        expected: list[Any] = [_varints([int(v) for v in value])]  # packed
    elif repeated:
        expected = [_expected_scalar(field, v) for v in value]
    else:
        expected = [_expected_scalar(field, value)]
    # decode_raw shows a string that happens to parse as a message nested: serialize it back
    found = [as_bytes(v) for v in found]
    return [] if found == expected else [f"{at}: wire {found!r} != {expected!r}"]
