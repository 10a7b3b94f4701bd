"""Request paths as the waypoint's L7 policy sees them: normalization and path matchers.

Normalization follows Istio's ``meshConfig.pathNormalization`` (Envoy's
``normalize_path``, ``merge_slashes`` and ``path_with_escaped_slashes_action``).
The default is ``BASE``, as in Istio. ``BASE`` does, in this order:

1. backslashes become forward slashes (Envoy's canonicalizer does this; a
   ``/admin\\x`` must not slip past a ``/admin/*`` rule);
2. percent-escapes of unreserved characters (``A-Z a-z 0-9 - . _ ~``) are
   decoded (``/%61dmin`` is ``/admin``); every other escape is kept, with its hex
   digits upper-cased (``%2f`` -> ``%2F``);
3. dot segments are removed as RFC 3986 section 5.2.4 says (``/a/./b/../c`` ->
   ``/a/c``; ``..`` never climbs above the root). ``%2E`` counts as a dot because
   of step 2.

Decisions, as Istio's ``BASE``: ``%2F`` and ``%5C`` are **not** decoded, so
``/a%2Fb`` is one segment and does not match ``/a/*``; slashes are not merged.
``MERGE_SLASHES`` adds merging of ``//``; ``DECODE_AND_MERGE_SLASHES`` also
decodes ``%2F``/``%5C`` first (Istio's strictest option). ``NONE`` leaves the path
alone. An escape that is not ``%`` plus two hex digits is left as written.

Matching works on the path without its query string. A policy path is exact
(``/a``), prefix (``/a/*``), suffix (``*.png``), presence (``*``), or a template
with ``{*}`` (exactly one non-empty segment) and ``{**}`` (any characters
including ``/``, possibly none; only the last operator), like Envoy's
``uri_template`` matcher.
"""

from __future__ import annotations

import enum
import re
from typing import Protocol

from ambient.authz.model import StringMatch

__all__ = [
    "MATCH_ANY_TEMPLATE",
    "MATCH_ONE_TEMPLATE",
    "PathMatcher",
    "PathNormalization",
    "compile_path",
    "normalize_path",
]

MATCH_ONE_TEMPLATE = "{*}"
MATCH_ANY_TEMPLATE = "{**}"

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")
_MERGE = re.compile(r"/{2,}")
# RFC 3986 pchar without "/": unreserved, pct-encoded, sub-delims, ":" and "@".
_SEGMENT = r"[A-Za-z0-9\-._~%!$&'()*+,;=:@]"


class PathNormalization(enum.Enum):
    """Istio's ``meshConfig.pathNormalization.normalization`` values."""

    NONE = "NONE"
    BASE = "BASE"
    MERGE_SLASHES = "MERGE_SLASHES"
    DECODE_AND_MERGE_SLASHES = "DECODE_AND_MERGE_SLASHES"


def normalize_path(path: str, mode: PathNormalization = PathNormalization.BASE) -> str:
    """``path`` (no query string) normalized as ``mode`` says (see the module docstring)."""
    if mode is PathNormalization.NONE or not path.startswith("/"):
        return path
    merge = mode is not PathNormalization.BASE
    if "%" not in path and "\\" not in path and "/." not in path and not (merge and "//" in path):
        return path  # the common case: nothing to do
    if "%" in path:
        path = _percent(path, decode_slashes=mode is PathNormalization.DECODE_AND_MERGE_SLASHES)
    path = path.replace("\\", "/")
    if "/." in path:
        path = _remove_dot_segments(path)
    if merge:
        path = _MERGE.sub("/", path)
    return path


def _percent(path: str, *, decode_slashes: bool) -> str:
    parts = path.split("%")
    out = [parts[0]]
    for part in parts[1:]:
        code = part[:2]
        if len(code) == 2 and code[0] in _HEX and code[1] in _HEX:
            char = chr(int(code, 16))
            if char in _UNRESERVED or (decode_slashes and char in "/\\"):
                out.append(char + part[2:])
            else:
                out.append("%" + code.upper() + part[2:])
        else:
            out.append("%" + part)
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    segments = path[1:].split("/")
    out: list[str] = []
    last = len(segments) - 1
    for i, segment in enumerate(segments):
        if segment == ".":
            if i == last:
                out.append("")
        elif segment == "..":
            if out:
                out.pop()
            if i == last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


class PathMatcher(Protocol):
    def matches(self, value: str) -> bool: ...


class _TemplateMatch:
    """A ``{*}``/``{**}`` template compiled to an anchored regular expression."""

    __slots__ = ("_regex", "template")

    def __init__(self, template: str) -> None:
        self.template = template
        parts = []
        for segment in template.split("/"):
            if segment == MATCH_ONE_TEMPLATE:
                parts.append(_SEGMENT + "+")
            elif segment == MATCH_ANY_TEMPLATE:
                parts.append(_SEGMENT[:-1] + "/]*")
            else:
                parts.append(re.escape(segment))
        self._regex = re.compile("/".join(parts))

    def matches(self, value: str) -> bool:
        return self._regex.fullmatch(value) is not None

    def __repr__(self) -> str:
        return f"_TemplateMatch({self.template!r})"


def compile_path(value: str) -> PathMatcher:
    """The matcher for one policy ``paths`` entry (validated by ``check_path``)."""
    if MATCH_ONE_TEMPLATE in value or MATCH_ANY_TEMPLATE in value:
        return _TemplateMatch(value)
    return StringMatch.parse(value)
