"""Regular expressions as Envoy runs them: RE2 syntax, matched against the whole value.

Gateway API and Istio hand regexes to Envoy's RE2 engine. We run them with
Python's ``re``, which accepts more than RE2 does; a pattern that only works in
Python (back-references, look-around, atomic groups, conditionals, possessive
quantifiers) would route differently in Istio and can take exponential time, so
it is refused at load with a message naming the construct. RE2's ``\\pN``
classes and ``(?U)`` have no Python spelling and are refused too.
"""

from __future__ import annotations

import re

__all__ = ["RegexError", "compile_re2"]


class RegexError(ValueError):
    """A pattern that is not valid RE2, or that Python cannot run as RE2 would."""


_UNSUPPORTED: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\\[1-9]"), "back-references (\\1) are not RE2 syntax"),
    (re.compile(r"\(\?P=\w+\)"), "named back-references (?P=name) are not RE2 syntax"),
    (re.compile(r"\(\?<?[=!]"), "look-ahead/look-behind assertions are not RE2 syntax"),
    (re.compile(r"\(\?>"), "atomic groups (?>...) are not RE2 syntax"),
    (re.compile(r"\(\?\("), "conditional groups (?(...)) are not RE2 syntax"),
    (re.compile(r"[*+?}][+]"), "possessive quantifiers (*+, ++) are not RE2 syntax"),
    (re.compile(r"\\[pP]"), "Unicode classes (\\p{...}) are not supported here"),
)


def _strip_escapes(pattern: str) -> str:
    """The pattern with every escaped pair (``\\\\``, ``\\(``) blanked, so checks see only syntax."""
    return re.sub(r"\\\\", "__", pattern)


def compile_re2(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """Compile an RE2 pattern, or raise ``RegexError`` saying what is wrong."""
    if len(pattern) > 1024:
        raise RegexError(f"regex is {len(pattern)} characters long (at most 1024)")
    plain = _strip_escapes(pattern)
    for construct, problem in _UNSUPPORTED:
        for found in construct.finditer(plain):
            if not _escaped(plain, found.start()):
                raise RegexError(f"invalid regex {pattern!r}: {problem}")
    try:
        return re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as err:
        raise RegexError(f"invalid regex {pattern!r}: {err}") from None


def _escaped(text: str, index: int) -> bool:
    """Whether ``text[index]`` is preceded by a backslash (``\\(?=`` is a literal paren)."""
    return index > 0 and text[index - 1] == "\\" and not text[index].startswith("\\")
