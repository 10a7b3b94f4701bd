"""A small declarative toolkit for checking parsed YAML against a schema.

A schema is a tree of ``Node`` objects. ``node.parse(value, at, report)``
returns the typed value, or ``INVALID`` after recording every problem it found
in ``report`` (it never raises on bad input). An ``Obj`` node lists its fields
in a table and builds a frozen dataclass from them, so a kind's validator reads
like the kind's reference documentation::

    PORT = Obj(ContainerPort, {
        "containerPort": req(Int(1, 65535)),
        "name": Str(rules.iana_svc_name),
        "protocol": Choice("TCP", "UDP", "SCTP"),
    }, ignore={"hostIP", "hostPort"})

YAML keys map to dataclass attributes by camelCase -> snake_case
(``containerPort`` -> ``container_port``, ``clusterIP`` -> ``cluster_ip``)
unless a ``Field`` names the attribute. An absent or ``null`` optional field
is not passed, so the dataclass default applies.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import keyword
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ambient.config import rules
from ambient.config.frozen import FrozenMap, RecursiveValueError, deep_freeze

__all__ = [
    "INVALID",
    "AnyMapping",
    "AnyValue",
    "Bool",
    "Check",
    "Choice",
    "Custom",
    "Field",
    "FieldPath",
    "Int",
    "IntOrStr",
    "Invalid",
    "Issue",
    "ListOf",
    "MapKey",
    "MapOf",
    "Node",
    "Obj",
    "Report",
    "Str",
    "render_path",
    "req",
    "show",
    "snake_case",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
V = TypeVar("V")


class Invalid(enum.Enum):
    """The type of ``INVALID``, the result of parsing a value that has problems."""

    INVALID = "INVALID"


INVALID = Invalid.INVALID


@dataclass(frozen=True)
class MapKey:
    """A path segment that is a key of a user-defined map (rendered ``[key]``)."""

    key: str


FieldPath = tuple[str | int | MapKey, ...]


def render_path(path: FieldPath) -> str:
    """``("spec", "containers", 0, "name")`` -> ``spec.containers[0].name``."""
    out = ""
    for segment in path:
        if isinstance(segment, int):
            out += f"[{segment}]"
        elif isinstance(segment, MapKey):
            out += f"[{segment.key}]"
        else:
            out += f".{segment}" if out else segment
    return out


@dataclass(frozen=True)
class Issue:
    """A problem (or, with ``warning``, a remark) at a field path."""

    path: FieldPath
    message: str
    warning: bool = False


@dataclass
class Report:
    """Collects the issues found while parsing one object."""

    issues: list[Issue] = field(default_factory=list)

    def error(self, path: FieldPath, message: str) -> None:
        """Record an error at ``path``."""
        self.issues.append(Issue(path, message))

    def warn(self, path: FieldPath, message: str) -> None:
        """Record a warning at ``path``: the value is accepted, but worth telling the user."""
        self.issues.append(Issue(path, message, warning=True))

    @property
    def error_count(self) -> int:
        """The number of errors (not warnings) recorded so far."""
        return sum(1 for issue in self.issues if not issue.warning)


def show(value: object) -> str:
    """Describe a YAML value briefly, the way the user wrote it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:60]) + "..."
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, (bytes, bytearray)):
        return "binary data"
    return f"a value of YAML type {type(value).__name__}"


def snake_case(name: str) -> str:
    """``containerPort`` -> ``container_port``; ``podIP`` -> ``pod_ip``; ``from`` -> ``from_``."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower().replace("-", "_")
    return snake + "_" if keyword.iskeyword(snake) else snake


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Node(ABC, Generic[T_co]):
    """A schema node: checks one YAML value and converts it to a typed value."""

    expected: str = "a value"

    @abstractmethod
    def parse(self, value: object, at: FieldPath, report: Report) -> T_co | Invalid:
        """Return the typed value, or record problems in ``report`` and return ``INVALID``."""

    def _type_error(self, value: object, at: FieldPath, report: Report) -> Invalid:
        hint = " (quote it in YAML)" if isinstance(value, (bool, int, float)) else ""
        if self.expected != "a string":
            hint = ""
        report.error(at, f"expected {self.expected}, got {show(value)}{hint}")
        return INVALID


Check = Callable[[T, FieldPath, Report], None]


class Str(Node[str]):
    """A string, checked by zero or more ``rules``."""

    expected = "a string"

    def __init__(self, *checks: rules.Rule) -> None:
        self.checks = checks

    def parse(self, value: object, at: FieldPath, report: Report) -> str | Invalid:
        if not isinstance(value, str):
            return self._type_error(value, at, report)
        for check in self.checks:
            problem = check(value)
            if problem is not None:
                report.error(at, problem)
                return INVALID
        return value


class Int(Node[int]):
    """An integer (not a bool, not a float, not a quoted number) within optional bounds."""

    expected = "an integer"

    def __init__(self, minimum: int | None = None, maximum: int | None = None) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def parse(self, value: object, at: FieldPath, report: Report) -> int | Invalid:
        if isinstance(value, bool) or not isinstance(value, int):
            return self._type_error(value, at, report)
        low, high = self.minimum, self.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            if low is not None and high is not None:
                report.error(at, f"must be between {low} and {high}, got {value}")
            elif low is not None:
                report.error(at, f"must be at least {low}, got {value}")
            else:
                report.error(at, f"must be at most {high}, got {value}")
            return INVALID
        return value


class Bool(Node[bool]):
    """A boolean: ``true`` or ``false``."""

    expected = "a boolean (true or false)"

    def parse(self, value: object, at: FieldPath, report: Report) -> bool | Invalid:
        if not isinstance(value, bool):
            return self._type_error(value, at, report)
        return value


class Choice(Node[str]):
    """One string out of a fixed set; with ``ignore_case``, returns the canonical spelling."""

    expected = "a string"

    def __init__(self, *choices: str, ignore_case: bool = False) -> None:
        self.choices = choices
        self.ignore_case = ignore_case

    def parse(self, value: object, at: FieldPath, report: Report) -> str | Invalid:
        if not isinstance(value, str):
            return self._type_error(value, at, report)
        for choice in self.choices:
            if value == choice or (self.ignore_case and value.lower() == choice.lower()):
                return choice
        hint = ""
        for choice in self.choices:
            if value.lower() == choice.lower():
                hint = f" (did you mean {choice!r}?)"
        report.error(at, f"must be one of {', '.join(self.choices)}, got {show(value)}{hint}")
        return INVALID


class IntOrStr(Node["int | str"]):
    """Kubernetes' IntOrString: an integer checked by one node, or a string by another."""

    def __init__(self, int_node: Node[int], str_node: Node[str], expected: str) -> None:
        self.int_node = int_node
        self.str_node = str_node
        self.expected = expected

    def parse(self, value: object, at: FieldPath, report: Report) -> int | str | Invalid:
        if isinstance(value, int) and not isinstance(value, bool):
            return self.int_node.parse(value, at, report)
        if isinstance(value, str):
            return self.str_node.parse(value, at, report)
        return self._type_error(value, at, report)


class ListOf(Node[tuple[T, ...]]):
    """A list whose items all match ``item``; ``unique`` names item fields that must differ."""

    expected = "a list"

    def __init__(self, item: Node[T], *, non_empty: bool = False, unique: Sequence[str] = ()):
        self.item = item
        self.non_empty = non_empty
        self.unique = unique

    def parse(self, value: object, at: FieldPath, report: Report) -> tuple[T, ...] | Invalid:
        if not isinstance(value, list):
            return self._type_error(value, at, report)
        if self.non_empty and not value:
            report.error(at, "must not be empty")
            return INVALID
        items: list[T] = []
        ok = True
        for index, raw in enumerate(value):
            parsed = self.item.parse(raw, (*at, index), report)
            if parsed is INVALID:
                ok = False
            else:
                items.append(parsed)
        if not ok:
            return INVALID
        for key in self.unique:
            if not self._check_unique(items, key, at, report):
                ok = False
        return tuple(items) if ok else INVALID

    @staticmethod
    def _check_unique(items: list[T], key: str, at: FieldPath, report: Report) -> bool:
        attr = snake_case(key)
        first: dict[object, int] = {}
        ok = True
        for index, item in enumerate(items):
            value = getattr(item, attr, None)
            if value is None or value == "":
                continue
            if value in first:
                where = render_path((*at, first[value]))
                report.error((*at, index, key), f"duplicate {key} {show(value)} (see {where})")
                ok = False
            else:
                first[value] = index
        return ok


class MapOf(Node[FrozenMap[str, V]]):
    """A mapping from string keys (checked by ``key_rules``) to values matching ``value``."""

    expected = "a mapping"

    def __init__(self, value: Node[V], *key_rules: rules.Rule) -> None:
        self.value = value
        self.key_rules = key_rules

    def parse(self, value: object, at: FieldPath, report: Report) -> FrozenMap[str, V] | Invalid:
        if not isinstance(value, Mapping):
            return self._type_error(value, at, report)
        items: dict[str, V] = {}
        ok = True
        for key, raw in value.items():
            if not isinstance(key, str):
                report.error((*at, MapKey(str(key))), f"expected a string key, got {show(key)}")
                ok = False
                continue
            problem = next((p for p in (rule(key) for rule in self.key_rules) if p), None)
            if problem is not None:
                report.error((*at, MapKey(key)), problem)
                ok = False
                continue
            parsed = self.value.parse(raw, (*at, MapKey(key)), report)
            if parsed is INVALID:
                ok = False
            else:
                items[key] = parsed
        return FrozenMap(items) if ok else INVALID


class AnyValue(Node[object]):
    """Any YAML value, deep-frozen (mappings -> FrozenMap, lists -> tuples)."""

    def parse(self, value: object, at: FieldPath, report: Report) -> object:
        try:
            return deep_freeze(value)
        except RecursiveValueError as err:
            report.error(at, str(err))
            return INVALID


class AnyMapping(Node[FrozenMap[str, object]]):
    """Any mapping with string keys, deep-frozen; its contents are not checked."""

    expected = "a mapping"

    def parse(
        self, value: object, at: FieldPath, report: Report
    ) -> FrozenMap[str, object] | Invalid:
        if not isinstance(value, Mapping):
            return self._type_error(value, at, report)
        bad = [key for key in value if not isinstance(key, str)]
        for key in bad:
            report.error((*at, str(key)), f"expected a string key, got {show(key)}")
        frozen = AnyValue().parse(value, at, report)
        if bad or not isinstance(frozen, FrozenMap):
            return INVALID
        return frozen


class Custom(Node[T]):
    """A node backed by a function that returns the value or raises ``ValueError``.

    For packages with their own readers: if the exception has a string
    attribute ``path``, it is a field path relative to this node's field
    (``rules[0].to``); the exception's ``message`` attribute, or its text, is
    the problem.
    """

    def __init__(self, parse: Callable[[object], T], expected: str = "a value") -> None:
        self.function = parse
        self.expected = expected

    def parse(self, value: object, at: FieldPath, report: Report) -> T | Invalid:
        try:
            return self.function(value)
        except ValueError as err:
            path = getattr(err, "path", None)
            message = getattr(err, "message", None)
            where = (*at, path) if isinstance(path, str) and path else at
            report.error(where, message if isinstance(message, str) else str(err))
            return INVALID


@dataclass(frozen=True)
class Field(Generic[T]):
    """A field of an ``Obj``: its node, whether it is required, and its attribute name."""

    node: Node[T]
    required: bool = False
    attr: str | None = None


def req(node: Node[T], attr: str | None = None) -> Field[T]:
    """A required field."""
    return Field(node, required=True, attr=attr)


class Obj(Node[T]):
    """A mapping with a fixed set of fields, built into ``cls`` (usually a frozen dataclass).

    ``ignore`` lists fields that are accepted and dropped (Kubernetes fields with
    no meaning here); ``unsupported`` maps fields to the reason they are
    rejected; any other unknown field is an error. ``checks`` run on the built
    object, only when every field was valid.
    """

    expected = "a mapping"

    def __init__(
        self,
        cls: Callable[..., T],
        fields: Mapping[str, Field[Any] | Node[Any]],
        *,
        ignore: Iterable[str] = (),
        unsupported: Mapping[str, str] | None = None,
        checks: Sequence[Check[T]] = (),
    ) -> None:
        self.cls = cls
        self.fields: dict[str, Field[Any]] = {
            key: f if isinstance(f, Field) else Field(f) for key, f in fields.items()
        }
        self.attrs = {key: f.attr or snake_case(key) for key, f in self.fields.items()}
        self.ignore = frozenset(ignore)
        self.unsupported = dict(unsupported or {})
        self.checks = tuple(checks)
        self._verify()

    def _verify(self) -> None:
        """Fail at import time when the table and the dataclass disagree."""
        if not (isinstance(self.cls, type) and dataclasses.is_dataclass(self.cls)):
            return
        init = {f.name: f for f in dataclasses.fields(self.cls) if f.init}
        for key, attr in self.attrs.items():
            if attr not in init:
                raise TypeError(f"{self.cls.__name__} has no init field {attr!r} for {key!r}")
        required = {self.attrs[k] for k, f in self.fields.items() if f.required}
        for name, dc_field in init.items():
            no_default = (
                dc_field.default is dataclasses.MISSING
                and dc_field.default_factory is dataclasses.MISSING
            )
            if no_default and name not in required:
                raise TypeError(f"{self.cls.__name__}.{name} has no default: mark it required")

    def parse(self, value: object, at: FieldPath, report: Report) -> T | Invalid:
        if not isinstance(value, Mapping):
            return self._type_error(value, at, report)
        errors_before = report.error_count
        kwargs: dict[str, object] = {}
        for key, raw in value.items():
            if not isinstance(key, str):
                report.error(
                    (*at, str(key)), f"unknown field: expected a field name, got {show(key)}"
                )
            elif key in self.fields:
                if raw is not None:
                    parsed = self.fields[key].node.parse(raw, (*at, key), report)
                    if parsed is not INVALID:
                        kwargs[self.attrs[key]] = parsed
            elif key in self.unsupported:
                report.error((*at, key), f"not supported: {self.unsupported[key]}")
            elif key not in self.ignore:
                known = [*self.fields, *self.unsupported, *self.ignore]
                report.error((*at, key), "unknown field" + _did_you_mean(key, known))
        for key, f in self.fields.items():
            if f.required and value.get(key) is None:
                report.error((*at, key), "missing required field")
        if report.error_count > errors_before:
            return INVALID
        built = self.cls(**kwargs)
        for check in self.checks:
            check(built, at, report)
        return built if report.error_count == errors_before else INVALID
