"""One-time join tokens: how a node first gets its node certificate (``ambient node join``).

Decisions: a token is for one node; only its SHA-256 hash is stored, in
``join-tokens.json`` (0600, in a 0700 folder, under a file lock so a CLI may
create tokens while the control plane redeems them); it lives 1 hour by default,
7 days at most; it is consumed only once its node's CSR was signed (and the node
recorded as a member); used and expired records are kept a day for clear errors.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from ambient.identity.node import DEFAULT_NODE_TTL, NodeAuthority, validate_node_name
from ambient.identity.x509util import make_private_dir, write_atomic

__all__ = [
    "DEFAULT_TOKEN_TTL",
    "MAX_TOKEN_TTL",
    "TOKENS_FILE",
    "JoinTokenError",
    "JoinTokenInfo",
    "JoinTokens",
    "TokenStoreError",
]

DEFAULT_TOKEN_TTL = timedelta(hours=1)
MAX_TOKEN_TTL = timedelta(days=7)
TOKEN_PRUNE_AFTER = timedelta(days=1)  # expired/used records kept this long for clear errors
TOKENS_FILE = "join-tokens.json"
TOKENS_LOCK = "join-tokens.lock"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,128}")


class JoinTokenError(PermissionError):
    """A join token that is unknown, expired, already used or for another node."""


class TokenStoreError(RuntimeError):
    """The join token store cannot be read or written."""


@dataclass(frozen=True)
class JoinTokenInfo:
    """What is stored about a join token (never the token itself)."""

    node: str
    created: datetime
    expires: datetime
    used: datetime | None


class JoinTokens:
    """One-time join tokens: :meth:`create` one for a node, :meth:`redeem` it exactly once."""

    def __init__(
        self,
        directory: Path,
        authority: NodeAuthority,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Store tokens in ``directory`` (e.g. ``<state_dir>/nodes``); sign with ``authority``."""
        self._dir = Path(directory)
        self._authority = authority
        self._clock = clock or authority.now

    @property
    def path(self) -> Path:
        """The token store file."""
        return self._dir / TOKENS_FILE

    def create(self, node: str, ttl: timedelta = DEFAULT_TOKEN_TTL) -> str:
        """A new token that lets ``node`` join once within ``ttl``; only its hash is stored."""
        validate_node_name(node)
        if not timedelta(seconds=1) <= ttl <= MAX_TOKEN_TTL:
            raise ValueError(f"join token ttl must be between 1 second and 7 days, got {ttl}")
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._locked() as records:
            records[_hash(token)] = JoinTokenInfo(node, now, now + ttl, None)
        return token

    def redeem(
        self,
        token: str,
        csr_pem: bytes,
        *,
        node: str | None = None,
        ttl: timedelta = DEFAULT_NODE_TTL,
        record: Callable[[str, bytes], None] | None = None,
    ) -> tuple[str, bytes]:
        """``(node, certificate PEM)`` for ``csr_pem``, once per token; JoinTokenError if not.

        ``node``, if given, is who the caller says it is: it must be the token's node.
        ``record(node, chain)`` runs before the token is marked used (node membership:
        ``ambient.identity.members``). A CSR that cannot be signed, or a failing
        ``record``, leaves the token unused.
        """
        key = _hash(token) if isinstance(token, str) and _TOKEN.fullmatch(token) else None
        now = self._clock()
        with self._locked() as records:
            info = records.get(key) if key is not None else None
            if info is None:
                raise JoinTokenError(
                    "unknown join token: it was never issued by this control plane, or it "
                    "expired more than a day ago"
                )
            if info.used is not None:
                raise JoinTokenError(
                    f"the join token for node {info.node} was already used at {info.used}"
                )
            if now >= info.expires:
                raise JoinTokenError(
                    f"the join token for node {info.node} expired at {info.expires}"
                )
            if node is not None and node != info.node:
                raise JoinTokenError(f"the join token is for node {info.node}, not {node}")
            chain = self._authority.sign_node_csr(info.node, csr_pem, ttl)
            if record is not None:
                record(info.node, chain)
            assert key is not None
            records[key] = JoinTokenInfo(info.node, info.created, info.expires, now)
        return info.node, chain

    def tokens(self) -> list[JoinTokenInfo]:
        """The stored tokens (pending, used or recently expired), oldest first."""
        with self._locked() as records:
            return sorted(records.values(), key=lambda info: info.created)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, JoinTokenInfo]]:
        """The records under an exclusive file lock; written back if the block succeeds."""
        try:
            make_private_dir(self._dir)
            fd = os.open(self._dir / TOKENS_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as err:
            raise TokenStoreError(
                f"cannot open the join token store in {self._dir}: {err}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            records = self._load()
            now = self._clock()
            kept = {k: v for k, v in records.items() if now < v.expires + TOKEN_PRUNE_AFTER}
            yield kept
            self._store(kept)
        finally:
            os.close(fd)

    def _load(self) -> dict[str, JoinTokenInfo]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as err:
            raise TokenStoreError(f"cannot read {self.path}: {err}") from None
        try:
            data = json.loads(text)
            return {
                key: JoinTokenInfo(
                    validate_node_name(item["node"]),
                    datetime.fromisoformat(item["created"]),
                    datetime.fromisoformat(item["expires"]),
                    datetime.fromisoformat(item["used"]) if item["used"] else None,
                )
                for key, item in data["tokens"].items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise TokenStoreError(f"{self.path} is malformed ({err}); remove it") from None

    def _store(self, records: dict[str, JoinTokenInfo]) -> None:
        data = {
            "version": 1,
            "tokens": {
                key: {
                    "node": info.node,
                    "created": info.created.isoformat(),
                    "expires": info.expires.isoformat(),
                    "used": info.used.isoformat() if info.used else None,
                }
                for key, info in records.items()
            },
        }
        try:
            write_atomic(self.path, json.dumps(data, indent=1).encode(), 0o600)
        except OSError as err:
            raise TokenStoreError(f"cannot write {self.path}: {err}") from None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()
