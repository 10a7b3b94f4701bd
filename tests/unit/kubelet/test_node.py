"""The Node's status as the kubelet reports it (``ambient.kubelet.node``)."""

from __future__ import annotations

from pathlib import Path

from ambient.kubelet.node import host_facts, node_status


def test_node_status_ready_and_not_ready(tmp_path: Path) -> None:
    facts = host_facts(tmp_path / "missing")  # the nearest existing folder is measured
    status = node_status(facts, "192.0.2.1", "node-1", ready=True, version="v1.37.2")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Ready"]["reason"] == "KubeletReady"
    for kind in ("MemoryPressure", "DiskPressure", "PIDPressure"):
        assert conditions[kind]["status"] == "False"
    assert status["addresses"] == [
        {"type": "InternalIP", "address": "192.0.2.1"},
        {"type": "Hostname", "address": "node-1"},
    ]
    assert status["capacity"]["pods"] == "110" and int(status["capacity"]["cpu"]) >= 1
    assert status["capacity"]["memory"].endswith("Ki")
    down = node_status(facts, "192.0.2.1", "node-1", ready=False, version="v1", previous=status)
    ready = next(c for c in down["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        "KubeletNotReady",
        "kubelet is shutting down",
    )
    pressure = next(c for c in down["conditions"] if c["type"] == "DiskPressure")
    assert pressure["lastTransitionTime"] == conditions["DiskPressure"]["lastTransitionTime"]
