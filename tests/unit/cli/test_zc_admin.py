"""ztunnel's /logging semantics and istioctl's zc table cells, without a mesh."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from ambient import logconfig
from ambient.cli.zctables import certificate_rows, connection_rows, policy_rows
from ambient.httpd import Request
from ambient.ztunnel.admin import logging_endpoint


@pytest.fixture
def levels() -> Iterator[logconfig.LogLevels]:
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.INFO)
    logconfig._levels = logconfig.LogLevels()
    yield logconfig.levels()
    logconfig.levels().apply("", reset=True)
    root.setLevel(before)
    logconfig._levels = None


def post(query: dict[str, str], peer: str = "127.0.0.1", method: str = "POST") -> tuple[int, str]:
    answer = logging_endpoint(Request(method, "/logging", query, b"", peer))
    return answer.status, answer.body.decode()


def test_logging_lists_changes_and_resets(levels: logconfig.LogLevels) -> None:
    assert post({}) == (200, "current log level is info\n")
    assert post({"level": "info,access=debug"}) == (200, "current log level is access=debug,info\n")
    assert logging.getLogger("ambient.access").isEnabledFor(logging.DEBUG)
    assert post({"level": "ztunnel::proxy:warn"})[1] == (
        "current log level is access=debug,ztunnel::proxy=warn,info\n"
    )
    assert not logging.getLogger("ambient.ztunnel.proxy").isEnabledFor(logging.INFO)
    assert post({"level": "access=off"})[1] == (
        "current log level is access=off,ztunnel::proxy=warn,info\n"
    )
    assert not logging.getLogger("ambient.access").isEnabledFor(logging.CRITICAL)
    assert post({"reset": ""}) == (200, "current log level is info\n")
    assert logging.getLogger("ambient.access").isEnabledFor(logging.INFO)
    assert post({"reset": "", "level": "debug"}) == (200, "current log level is debug\n")


@pytest.mark.parametrize("bad", ["loud", "access=loud", "=debug", "info,,access"])
def test_bad_levels_are_refused_and_change_nothing(levels: logconfig.LogLevels, bad: str) -> None:
    status, body = post({"level": bad})
    if bad == "info,,access":  # an empty clause is skipped; a bare target is not a level
        assert status == 400
    else:
        assert status == 400 and body.startswith(f"Invalid level provided: {bad}")
    assert post({})[1] == "current log level is info\n"


def test_changes_only_from_loopback_and_post_only(levels: logconfig.LogLevels) -> None:
    assert post({"level": "debug"}, peer="10.1.2.3")[0] == 403
    assert post({"level": "debug"}, peer="::1")[0] == 200
    assert post({}, method="GET")[0] == 405
    assert post({}, peer="10.1.2.3") == (200, "current log level is debug\n")  # reading is fine


def test_certificate_rows_leaf_intermediate_root_and_validity() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    cert = {"validFrom": "2026-01-01T00:00:00Z", "expirationTime": "2026-01-03T00:00:00Z"}
    entry = {
        "identity": "spiffe://td/ns/a/sa/b",
        "state": "Available",
        "certChain": [{**cert, "serialNumber": "255"}, {**cert, "serialNumber": "16"}],
        "rootCerts": [{**cert, "serialNumber": "1", "expirationTime": "2026-01-01T12:00:00Z"}],
    }
    times = ["2026-01-03T00:00:00Z", "2026-01-01T00:00:00Z"]  # NOT AFTER, NOT BEFORE
    rows = certificate_rows(
        [entry, {"identity": "x", "state": "Unavailable: no CA", "certChain": []}], now
    )
    assert rows == [
        ["spiffe://td/ns/a/sa/b", "Leaf", "Available", "true", "ff", *times],
        ["spiffe://td/ns/a/sa/b", "Intermediate", "Available", "true", "10", *times],
        ["spiffe://td/ns/a/sa/b", "Root", "Available", "false", "1", "2026-01-01T12:00:00Z", "2026-01-01T00:00:00Z"],
        ["x", "NA", "Unavailable", "false", "NA", "NA", "NA"],
    ]  # fmt: skip


def test_policy_and_connection_cells() -> None:
    policies = [
        {"namespace": "b", "name": "p", "action": "DENY", "scope": "GLOBAL", "dryRun": False},
        {"namespace": "a", "name": "q", "action": "ALLOW", "scope": "WORKLOAD_SELECTOR", "dryRun": True},
    ]  # fmt: skip
    assert policy_rows(policies) == [
        ["a", "q", "Allow (dry-run)", "WorkloadSelector"],
        ["b", "p", "Deny", "Global"],
    ]
    dump = {
        "services": [{"vips": ["127.20.0.1"], "hostname": "orders.shop.svc.cluster.local"}],
        "workloads": [
            {"workloadIps": ["127.10.0.7"], "name": "web-1", "namespace": "shop"},
            {"workloadIps": ["127.10.0.2"], "name": "orders-1", "namespace": "shop"},
        ],
        "workloadState": {
            "u1": {
                "info": {"name": "web-1", "namespace": "shop"},
                "connections": {
                    "inbound": [],
                    "outbound": [
                        {"src": "127.10.0.7:5000", "originalDst": "127.20.0.1:8080",
                         "actualDst": "127.10.0.2:15008", "protocol": "HBONE"}
                    ],
                },
            }
        },
    }  # fmt: skip
    assert connection_rows(dump, None, None, raw=False) == [
        ["web-1.shop", "Outbound", "web-1.shop:5000", "orders-1.shop:15008",
         "orders.shop.svc.cluster.local:8080", "HBONE"]
    ]  # fmt: skip
    assert connection_rows(dump, None, "inbound", raw=False) == []
    assert connection_rows(dump, None, None, raw=True)[0][2:5] == [
        "127.10.0.7:5000", "127.10.0.2:15008", "127.20.0.1:8080"
    ]  # fmt: skip
