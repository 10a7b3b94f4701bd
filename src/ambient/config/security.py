"""AuthorizationPolicy and PeerAuthentication: specs checked by ``ambient.authz`` at load.

The objects stay ``GenericResource`` (the control plane translates them when
it indexes), but a policy that ``ambient.authz`` would refuse is refused here,
with its field path, so a bad policy never replaces a good one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ambient.authz.peerauth import translate_peer_authentication
from ambient.authz.translate import PolicyError, translate_authorization_policy
from ambient.config.frozen import FrozenMap
from ambient.config.meta import resource_schema
from ambient.config.resources import GenericResource
from ambient.config.schema import INVALID, AnyMapping, FieldPath, Invalid, MapKey, Obj, Report

_PATH_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def _field_path(text: str) -> FieldPath:
    """``spec.rules[0].from`` -> ``("rules", 0, "from")`` (relative to the spec);
    ``metadata....`` paths stay whole."""
    if text.startswith("metadata.annotations["):  # an annotation key holds dots and slashes
        return ("metadata", "annotations", MapKey(text[len("metadata.annotations[") : -1]))
    parts: list[str | int] = []
    for index, name in _PATH_PART.findall(text):
        parts.append(int(index) if index else name)
    return tuple(parts[1:] if parts[:1] == ["spec"] else parts)


class _CheckedSpec(AnyMapping):
    """A spec kept as frozen YAML after a validator from ``ambient.authz`` accepted it."""

    def __init__(self, validate: Callable[[Mapping[str, Any]], object]) -> None:
        self.validate = validate

    def parse(
        self, value: object, at: FieldPath, report: Report
    ) -> FrozenMap[str, object] | Invalid:
        frozen = super().parse(value, at, report)
        if frozen is INVALID:
            return frozen
        assert isinstance(value, Mapping)
        try:
            self.validate(value)
        except PolicyError as exc:
            report.error((*at, *_field_path(exc.path)), exc.message)
            return INVALID
        return frozen


def _authorization_policy(spec: Mapping[str, Any]) -> object:
    return translate_authorization_policy("validation", "default", spec)


def _peer_authentication(spec: Mapping[str, Any]) -> object:
    return translate_peer_authentication("validation", "default", spec)


def _check_whole_policy(policy: GenericResource, at: FieldPath, report: Report) -> None:
    """What needs metadata too: the ``istio.io/dry-run`` annotation."""
    try:
        translate_authorization_policy(
            policy.meta.name,
            policy.meta.namespace,
            _plain(policy.spec),
            dict(policy.meta.annotations),
        )
    except PolicyError as exc:
        if exc.path.startswith("metadata"):
            report.error((*at, *_field_path(exc.path)), exc.message)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


AUTHORIZATION_POLICY: Obj[GenericResource] = resource_schema(
    GenericResource, _CheckedSpec(_authorization_policy)
)
AUTHORIZATION_POLICY.checks = (*AUTHORIZATION_POLICY.checks, _check_whole_policy)
PEER_AUTHENTICATION: Obj[GenericResource] = resource_schema(
    GenericResource, _CheckedSpec(_peer_authentication)
)
