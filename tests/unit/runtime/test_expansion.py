"""``$(VAR)`` expansion, checked against kubelet's own table (expand_test.go)."""

from __future__ import annotations

import pytest

from ambient.runtime.expansion import expand

VARS = {
    "VAR_A": "A",
    "VAR_B": "B",
    "VAR_C": "C",
    "VAR_REF": "$(VAR_A)",
    "VAR_EMPTY": "",
    "BIG_MONEY": "$1",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(VAR_A)", "A"),
        ("___$(VAR_B)___", "___B___"),
        ("$(VAR_C)$(VAR_A)", "CA"),
        ("$(VAR_A)-1", "A-1"),
        ("$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"),
        ("$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"),
        ("$$(VAR_A)$$(VAR_B)", "$(VAR_A)$(VAR_B)"),
        ("f000-$$VAR_A", "f000-$VAR_A"),
        ("foo\\$(VAR_C)bar", "foo\\Cbar"),
        ("foo\\\\$(VAR_C)bar", "foo\\\\Cbar"),
        ("$(VAR_EMPTY)", ""),
        ("$(VAR_REF)", "$(VAR_A)"),  # no recursion
        ("$(VAR_DNE)", "$(VAR_DNE)"),  # unknown: left as written
        ("$(VAR_A", "$(VAR_A"),
        ("$()", "$()"),
        ("$VAR_A", "$VAR_A"),
        ("$(VAR_A)$", "A$"),
        ("foo$", "foo$"),
        ("$", "$"),
        ("$$", "$"),
        ("$$$", "$$"),
        ("$$$$", "$$"),
        ("$(", "$("),
        ("$$$$$$(BIG_MONEY)", "$$$(BIG_MONEY)"),
        ("$$$$$$$(BIG_MONEY)", "$$$$1"),
        ("$(VAR_A$(VAR_B))", "$(VAR_A$(VAR_B))"),
        ("plain text", "plain text"),
        ("", ""),
    ],
)
def test_expand(text: str, expected: str) -> None:
    assert expand(text, VARS) == expected
