"""Which nodes are in the mesh: the node certificates the control plane issued and still honours.

A node certificate alone proved membership: it stayed good for its whole life
(30 days) and was renewed by presenting it, so a node removed from the mesh
kept its xDS stream and could renew for ever. Now the control plane records,
per node, the serial numbers of the node certificates it issued (at join and at
each renewal), and a node certificate is accepted only while its serial is
recorded for the node it names:

- ``ambient node revoke NODE`` removes the node's record: every certificate of
  it is refused from then on (renewal, workload certificates, a new xDS
  stream), and the running control plane closes the node's open xDS streams
  (:meth:`NodeMembers.changed` tells it the record changed). To bring the node
  back, create a new join token and join it again.
- A renewal keeps the old serial until it expires: the node goes on presenting
  its current certificate until it has saved the new one.
- Node certificates issued before membership was recorded are refused too: such
  a node joins again with a new token (``ambient up`` joins its nodes afresh at
  every start anyway).

Workload certificates already issued to a revoked node's pods stay valid until
they expire (24 h at most): peers do not consult the control plane per
connection (as in Istio, where no revocation list is checked either). The
revoked node cannot get new ones.

Stored in ``members.json`` (0600) next to the join tokens, under its own file
lock so the CLI may revoke while the control plane runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from cryptography import x509

from ambient.identity.certs import CertificateError, load_pem_chain, utc_now
from ambient.identity.jointokens import TokenStoreError
from ambient.identity.node import NodeCredentialError, validate_node_name
from ambient.identity.x509util import make_private_dir, write_atomic

__all__ = ["MEMBERS_FILE", "NodeMembers"]

MEMBERS_FILE = "members.json"
MEMBERS_LOCK = "members.lock"

# node -> {serial (hex): not_after}
_Records = dict[str, dict[str, datetime]]


class NodeMembers:
    """The node certificates the control plane honours, per node (see the module docs)."""

    def __init__(self, directory: Path, *, clock: Callable[[], datetime] | None = None) -> None:
        self._dir = Path(directory)
        self._clock = clock or utc_now
        self._cache: tuple[tuple[int, int], _Records] | None = None

    @property
    def path(self) -> Path:
        return self._dir / MEMBERS_FILE

    def admit(self, node: str, chain_pem: bytes) -> None:
        """Record the node certificate (PEM, leaf first) just issued to ``node``."""
        leaf = _leaf(chain_pem)
        with self._locked() as records:
            records.setdefault(validate_node_name(node), {})[_serial(leaf)] = (
                leaf.not_valid_after_utc
            )

    def revoke(self, node: str) -> bool:
        """Remove ``node`` from the mesh; False if it was not a member."""
        validate_node_name(node)
        with self._locked() as records:
            return records.pop(node, None) is not None

    def members(self) -> dict[str, int]:
        """The member nodes and how many of their certificates are honoured."""
        return {node: len(serials) for node, serials in sorted(self._read().items())}

    def check(self, node: str, cert_pem: bytes) -> None:
        """Raise ``NodeCredentialError`` unless ``cert_pem`` is a certificate ``node`` holds now."""
        serials = self._read().get(node)
        if not serials:
            raise NodeCredentialError(
                f"node {node} is not in the mesh (it was revoked, or joined before node "
                "membership was recorded): create a new join token and join it again"
            )
        leaf = _leaf(cert_pem)
        if _serial(leaf) not in serials:
            raise NodeCredentialError(
                f"the certificate presented for node {node} (serial {_serial(leaf)}) is not one "
                "this control plane honours for it (revoked or replaced): join the node again"
            )

    def changed(self) -> bool:
        """Whether the record changed since the last read (cheap: one ``stat``)."""
        return self._stamp() != (self._cache[0] if self._cache else None)

    # -- storage -------------------------------------------------------------------------------

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_ino

    def _read(self) -> _Records:
        stamp = self._stamp()
        if stamp is None:
            self._cache = None
            return {}
        if self._cache is not None and self._cache[0] == stamp:
            return self._cache[1]
        records = self._load()
        self._cache = (stamp, records)
        return records

    @contextlib.contextmanager
    def _locked(self) -> Iterator[_Records]:
        """The records under an exclusive file lock; written back if the block succeeds."""
        try:
            make_private_dir(self._dir)
            fd = os.open(self._dir / MEMBERS_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as err:
            raise TokenStoreError(
                f"cannot open the node membership in {self._dir}: {err}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            now = self._clock()
            records = {
                node: {s: end for s, end in serials.items() if end > now}
                for node, serials in self._load().items()
            }
            yield records
            self._store({node: serials for node, serials in records.items() if serials})
        finally:
            os.close(fd)

    def _load(self) -> _Records:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as err:
            raise TokenStoreError(f"cannot read {self.path}: {err}") from None
        try:
            data = json.loads(text)
            return {
                validate_node_name(node): {
                    str(serial): datetime.fromisoformat(end) for serial, end in serials.items()
                }
                for node, serials in data["nodes"].items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise TokenStoreError(
                f"{self.path} is malformed ({err}); nodes cannot be checked: fix or remove it "
                "(removing it means every node joins again)"
            ) from None

    def _store(self, records: _Records) -> None:
        data = {
            "version": 1,
            "nodes": {
                node: {serial: end.isoformat() for serial, end in sorted(serials.items())}
                for node, serials in sorted(records.items())
            },
        }
        try:
            write_atomic(self.path, json.dumps(data, indent=1).encode(), 0o600)
        except OSError as err:
            raise TokenStoreError(f"cannot write {self.path}: {err}") from None


def _leaf(chain_pem: bytes) -> x509.Certificate:
    try:
        return load_pem_chain(chain_pem, "node certificate")[0]
    except CertificateError as err:
        raise NodeCredentialError(str(err)) from None


def _serial(cert: x509.Certificate) -> str:
    return f"{cert.serial_number:x}"
