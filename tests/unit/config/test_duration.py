"""One duration parser for Istio's, Gateway API's and the command line's syntaxes.

The oracles are the three parsers it replaced (their grammars copied here), so a
difference in what is accepted, or in the value, fails.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ambient.config import ConfigError, load_text
from ambient.config.duration import CLI, GATEWAY, ISTIO, DurationSyntax, parse_duration
from ambient.config.requestauthn import RequestAuthentication

_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_OLD = {
    "istio": (
        r"(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:h|m|s|ms|us|µs|ns))+",
        r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(h|ms|m|s|us|µs|ns)",
    ),
    "gateway": (r"(?:[0-9]{1,5}(?:h|m|s|ms)){1,4}", r"([0-9]{1,5})(h|ms|m|s)"),
    "cli": (r"(?:[0-9]+[smhd])+", r"([0-9]+)([smhd])"),
}
_SYNTAX = {"istio": ISTIO, "gateway": GATEWAY, "cli": CLI}


def _old(name: str, text: str) -> float | None:
    whole, part = _OLD[name]
    if re.fullmatch(whole, text) is None:
        return None
    return sum(float(n) * _SECONDS[u] for n, u in re.findall(part, text))


def _new(syntax: DurationSyntax, text: str) -> float | None:
    try:
        return parse_duration(text, syntax)
    except ValueError:
        return None


@pytest.mark.parametrize(
    ("syntax", "text", "seconds"),
    [
        (ISTIO, "2s", 2.0),
        (ISTIO, "0.5s", 0.5),
        (ISTIO, "100ms", 0.1),
        (ISTIO, "1m30s", 90.0),
        (ISTIO, ".5us", 5e-7),
        (GATEWAY, "10s", 10.0),
        (GATEWAY, "1h30m", 5400.0),
        (GATEWAY, "500ms", 0.5),
        (CLI, "90s", 90.0),
        (CLI, "1h30m", 5400.0),
        (CLI, "2d", 172800.0),
    ],
)
def test_values(syntax: DurationSyntax, text: str, seconds: float) -> None:
    assert parse_duration(text, syntax) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("syntax", "text"),
    [
        (ISTIO, "5"),
        (ISTIO, "-1s"),
        (ISTIO, "5sec"),
        (ISTIO, ""),
        (ISTIO, "1d"),
        (GATEWAY, "1.5s"),
        (GATEWAY, "123456s"),
        (GATEWAY, "1h1m1s1ms1h"),
        (CLI, "1"),
        (CLI, "1h 2m"),
        (CLI, "500ms"),
        (CLI, "\u0661s"),  # an Arabic-Indic digit: only ASCII digits count
    ],
)
def test_refused_with_the_expected_form(syntax: DurationSyntax, text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration such as"):
        parse_duration(text, syntax)


@given(st.text(alphabet="0123456789.smhdµun -", max_size=12), st.sampled_from(sorted(_OLD)))
def test_same_as_the_parsers_it_replaced(text: str, name: str) -> None:
    old, new = _old(name, text), _new(_SYNTAX[name], text)
    assert (old is None) == (new is None), (name, text)
    if old is not None and new is not None:
        assert new == pytest.approx(old, rel=1e-12), (name, text)


def test_a_jwks_timeout_is_an_istio_duration_of_at_least_1ms() -> None:
    head = (
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n"
        "metadata: {name: ra, namespace: shop}\nspec:\n  jwtRules:\n  - issuer: x\n    timeout: "
    )
    (obj,) = list(load_text(head + "1m30s\n", "ra.yaml"))
    assert isinstance(obj, RequestAuthentication) and obj.spec.jwt_rules[0].timeout == 90.0
    for bad, problem in (("0s", "at least 1ms"), ("5sec", "expected a duration")):
        with pytest.raises(ConfigError, match=problem):
            load_text(head + bad + "\n", "ra.yaml")
