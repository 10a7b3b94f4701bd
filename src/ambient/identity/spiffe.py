"""SPIFFE ids of Kubernetes workloads: ``spiffe://<trust-domain>/ns/<namespace>/sa/<account>``.

Parsing is strict and fails closed: anything that is not exactly this shape is
rejected with an :class:`InvalidSpiffeId` naming the input and the problem.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

__all__ = [
    "DEFAULT_TRUST_DOMAIN",
    "MAX_SPIFFE_ID_LENGTH",
    "InvalidSpiffeId",
    "SpiffeId",
    "validate_trust_domain",
]

DEFAULT_TRUST_DOMAIN = "cluster.local"
MAX_SPIFFE_ID_LENGTH = 2048  # bytes, SPIFFE-ID spec section 2.3
MAX_TRUST_DOMAIN_LENGTH = 255  # SPIFFE-ID spec section 2.1

_SCHEME = "spiffe://"
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
# Kubernetes: a namespace is a DNS-1123 label, a service account a DNS-1123 subdomain.
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
_MAX_NAMESPACE = 63
_MAX_SERVICE_ACCOUNT = 253


class InvalidSpiffeId(ValueError):
    """A string or field that is not a valid workload SPIFFE id."""

    def __init__(self, value: object, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"invalid SPIFFE id {_show(value)}: {reason}")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def validate_trust_domain(trust_domain: str) -> str:
    """Return ``trust_domain`` if it is a valid SPIFFE trust domain name, else raise."""
    if not isinstance(trust_domain, str):
        raise InvalidSpiffeId(trust_domain, "trust domain must be a string")
    if not trust_domain:
        raise InvalidSpiffeId(trust_domain, "trust domain is empty")
    if len(trust_domain) > MAX_TRUST_DOMAIN_LENGTH:
        raise InvalidSpiffeId(
            trust_domain, f"trust domain is longer than {MAX_TRUST_DOMAIN_LENGTH} characters"
        )
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise InvalidSpiffeId(
            trust_domain,
            "trust domain may only contain lowercase letters, digits, '.', '-' and '_'",
        )
    return trust_domain


def _check_trust_domain_in(trust_domain: str, uri: str) -> None:
    try:
        validate_trust_domain(trust_domain)
    except InvalidSpiffeId as err:
        raise InvalidSpiffeId(uri, f"{err.reason} ({trust_domain!r})") from None


def _check_namespace(namespace: str, shown: object) -> None:
    if not namespace:
        raise InvalidSpiffeId(shown, "namespace is empty")
    if len(namespace) > _MAX_NAMESPACE or not _DNS_LABEL.fullmatch(namespace):
        raise InvalidSpiffeId(
            shown,
            f"namespace {namespace!r} is not a DNS label (lowercase letters, digits and '-', "
            f"starting and ending with a letter or digit, at most {_MAX_NAMESPACE} characters)",
        )


def _check_service_account(account: str, shown: object) -> None:
    if not account:
        raise InvalidSpiffeId(shown, "service account is empty")
    if len(account) > _MAX_SERVICE_ACCOUNT or not _DNS_SUBDOMAIN.fullmatch(account):
        raise InvalidSpiffeId(
            shown,
            f"service account {account!r} is not a DNS subdomain (dot-separated labels of "
            f"lowercase letters, digits and '-', at most {_MAX_SERVICE_ACCOUNT} characters)",
        )


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """The identity of a Kubernetes service account in a trust domain.

    The fields are validated on construction, so every instance is a valid id.
    """

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        for name in ("trust_domain", "namespace", "service_account"):
            if not isinstance(getattr(self, name), str):
                raise InvalidSpiffeId(getattr(self, name), f"{name} must be a string")
        validate_trust_domain(self.trust_domain)
        _check_namespace(self.namespace, self.namespace)
        _check_service_account(self.service_account, self.service_account)

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Parse ``spiffe://<td>/ns/<ns>/sa/<sa>``; raise :class:`InvalidSpiffeId` otherwise."""
        if not isinstance(uri, str):
            raise InvalidSpiffeId(uri, f"expected a string, got {type(uri).__name__}")
        if len(uri.encode("utf-8", "surrogatepass")) > MAX_SPIFFE_ID_LENGTH:
            raise InvalidSpiffeId(uri, f"longer than {MAX_SPIFFE_ID_LENGTH} bytes")
        if not uri:
            raise InvalidSpiffeId(uri, "empty string")
        if not uri.startswith(_SCHEME):
            if uri[: len(_SCHEME)].lower() == _SCHEME:
                raise InvalidSpiffeId(uri, "scheme must be lowercase 'spiffe://'")
            raise InvalidSpiffeId(uri, "scheme must be 'spiffe://'")
        for char, what in (("?", "a query"), ("#", "a fragment"), ("%", "percent-encoding")):
            if char in uri:
                raise InvalidSpiffeId(uri, f"must not contain {what} ({char!r})")
        rest = uri[len(_SCHEME) :]
        authority, slash, path = rest.partition("/")
        if "@" in authority:
            raise InvalidSpiffeId(uri, "must not contain userinfo ('@')")
        if ":" in authority:
            raise InvalidSpiffeId(uri, "must not contain a port (':')")
        _check_trust_domain_in(authority, uri)
        if not slash or not path:
            raise InvalidSpiffeId(uri, "missing path; expected /ns/<namespace>/sa/<account>")
        segments = path.split("/")
        if "" in segments:
            raise InvalidSpiffeId(uri, "path has an empty segment ('//' or a trailing '/')")
        if len(segments) != 4 or segments[0] != "ns" or segments[2] != "sa":
            raise InvalidSpiffeId(
                uri, f"path /{path} is not of the form /ns/<namespace>/sa/<account>"
            )
        _check_namespace(segments[1], uri)
        _check_service_account(segments[3], uri)
        return cls(authority, segments[1], segments[3])

    @classmethod
    def workload(
        cls,
        namespace: str,
        service_account: str = "default",
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
    ) -> SpiffeId:
        """The id of ``service_account`` in ``namespace`` (validated; cached, as ids are
        immutable and asked for on every proxied connection)."""
        if cls is SpiffeId and all(
            type(part) is str for part in (trust_domain, namespace, service_account)
        ):
            return _workload_id(trust_domain, namespace, service_account)
        return cls(trust_domain, namespace, service_account)

    @property
    def uri(self) -> str:
        """The ``spiffe://`` URI of this id."""
        return f"{_SCHEME}{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri


@functools.lru_cache(maxsize=4096)
def _workload_id(trust_domain: str, namespace: str, service_account: str) -> SpiffeId:
    return SpiffeId(trust_domain, namespace, service_account)
