"""Where a ztunnel gets the bearer token it shows the control plane (Kubernetes mode).

In a cluster a ztunnel authenticates to the CA and to xDS as Istio's does: with a
service-account token of ``istio-system/ztunnel`` bound to its own pod, audience
``istio-ca``, sent as ``authorization: Bearer <token>`` over TLS that authenticates
the server only. A :class:`TokenSource` is what the CA and xDS clients take
(``CaClient.with_token``, ``TokenAuth``); each call asks it for the token, so a
renewed token is used from the next call on:

- :class:`FileTokenSource` — a projected token file (Istio mounts it at
  ``/var/run/secrets/tokens/istio-token``); the kubelet rewrites the file before the
  token expires, so the file is read again on every call, as Istio's ztunnel does
  (``identity/auth.rs``).
- ``ambient.kube.tokenrequest.TokenRequestSource`` — asks the API server itself
  (TokenRequest for the ztunnel's ServiceAccount, bound to its pod) and renews the
  token before it expires.

A source raises :class:`TokenError` (naming the file or the request) when it has no
usable token; the clients turn that into a refused call, never into an
unauthenticated one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = [
    "CA_AUDIENCE",
    "ISTIO_TOKEN_PATH",
    "MAX_TOKEN_BYTES",
    "FileTokenSource",
    "TokenError",
    "TokenSource",
    "bearer_metadata",
]

CA_AUDIENCE = "istio-ca"  # the audience istiod's CA requires of ztunnel tokens
ISTIO_TOKEN_PATH = Path("/var/run/secrets/tokens/istio-token")
MAX_TOKEN_BYTES = 16 * 1024  # a service-account JWT is ~1 KiB; bigger is not a token


class TokenError(RuntimeError):
    """No usable token: the file is missing, empty or malformed, or the request failed."""


@runtime_checkable
class TokenSource(Protocol):
    """Something that hands out the current bearer token (see the module docstring)."""

    async def token(self) -> str:
        """The token to send now; raises ``TokenError`` if there is none."""
        ...

    def describe(self) -> str:
        """Where the token comes from, for messages (never the token)."""
        ...


def check_token(text: str, where: str) -> str:
    """``text`` stripped if it can be a bearer token (printable ASCII, no spaces), else TokenError."""
    token = text.strip()
    if not token:
        raise TokenError(f"{where}: the token is empty")
    if len(token) > MAX_TOKEN_BYTES or not all("!" <= c <= "~" for c in token):
        raise TokenError(f"{where}: not a bearer token (expected printable ASCII, no spaces)")
    return token


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The gRPC metadata that carries ``token``."""
    return (("authorization", f"Bearer {token}"),)


class FileTokenSource:
    """A token file written by someone else (the kubelet's projected volume), read per call."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def describe(self) -> str:
        return f"token file {self.path}"

    async def token(self) -> str:
        return await asyncio.to_thread(self._read)

    def _read(self) -> str:
        try:
            with self.path.open("rb") as f:
                data = f.read(MAX_TOKEN_BYTES + 1)
        except OSError as err:
            raise TokenError(f"cannot read {self.describe()}: {err.strerror or err}") from None
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise TokenError(f"{self.describe()}: not a bearer token (not ASCII)") from None
        return check_token(text, self.describe())
