"""uninstall's reading of a CRD stuck in its finalizer (InstanceDeletionFailed)."""

from __future__ import annotations

from typing import Any

from lightkube import codecs

from ambient.install.apply import _instance_deletion_failed


def crd(conditions: list[dict[str, Any]] | None) -> Any:
    body: dict[str, Any] = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "envoyfilters.networking.istio.io"},
        "spec": {
            "group": "networking.istio.io",
            "names": {"kind": "EnvoyFilter", "plural": "envoyfilters"},
            "scope": "Namespaced",
            "versions": [{"name": "v1alpha3", "served": True, "storage": True}],
        },
    }
    if conditions is not None:
        body["status"] = {"conditions": conditions}
    return codecs.from_dict(body)


def condition(type_: str, reason: str) -> dict[str, Any]:
    return {"type": type_, "status": "True", "reason": reason, "message": "m"}


def test_a_finalizer_that_failed_is_seen() -> None:
    stuck = crd(
        [condition("Established", "InitialNamesAccepted"), condition("Terminating", "InstanceDeletionFailed")]
    )  # fmt: skip
    assert _instance_deletion_failed(stuck)


def test_a_finalizer_at_work_or_no_status_is_left_alone() -> None:
    assert not _instance_deletion_failed(
        crd([condition("Terminating", "InstanceDeletionInProgress")])
    )
    assert not _instance_deletion_failed(crd([condition("Established", "InstanceDeletionFailed")]))
    assert not _instance_deletion_failed(crd(None))
    assert not _instance_deletion_failed(object())
