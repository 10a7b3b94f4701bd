"""kubectl jsonpath subset: the templates operators type, and clear errors for bad ones."""

from __future__ import annotations

import pytest

from ambient.cli.jsonpath import JsonPathError, render

GATEWAY = {
    "metadata": {"name": "waypoint", "labels": {"istio.io/waypoint-for": "service"}},
    "status": {
        "addresses": [{"type": "IPAddress", "value": "127.20.0.2"}],
        "conditions": [
            {"type": "Accepted", "status": "True"},
            {"type": "Programmed", "status": "False"},
        ],
    },
}
LIST = {"kind": "List", "items": [GATEWAY, {"metadata": {"name": "other"}, "status": {}}]}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # the seed guide's Verify step
        ('{.status.conditions[?(@.type=="Programmed")].status}{"\\n"}', "False\n"),
        ("{.metadata.name}", "waypoint"),
        ("name={.metadata.name}!", "name=waypoint!"),
        ("{.status.conditions[0].type}", "Accepted"),
        ("{.status.conditions[-1].type}", "Programmed"),
        ("{.status.conditions[*].type}", "Accepted Programmed"),
        ("{..type}", "IPAddress Accepted Programmed"),
        ("{.metadata.labels['istio.io/waypoint-for']}", "service"),
        ("{.status.conditions[?(@.status!='True')].type}", "Programmed"),
        ("{.status.missing}", ""),
        ("{.status.addresses[0]}", '{"type": "IPAddress", "value": "127.20.0.2"}'),
        (
            '{range .status.conditions[*]}{.type}={.status}{"\\n"}{end}',
            "Accepted=True\nProgrammed=False\n",
        ),
    ],
)
def test_templates(template: str, expected: str) -> None:
    assert render(template, GATEWAY) == expected


def test_range_over_list_items() -> None:
    assert render('{range .items[*]}{.metadata.name}{"\\n"}{end}', LIST) == "waypoint\nother\n"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{.status", "unclosed"),
        ("{end}", "without {range"),
        ("{range .items[*]}{.x}", "without {end}"),
        ("{.status.conditions[?(@.type ~ 'x')]}", "unsupported filter"),
        ("{.a b}", "cannot parse"),
    ],
)
def test_bad_templates(template: str, problem: str) -> None:
    with pytest.raises(JsonPathError, match=problem):
        render(template, GATEWAY)
