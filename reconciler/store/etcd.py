"""The state store on etcd (3.4 or newer), through its v3 JSON gateway over plain HTTP.

Each call is one POST to one endpoint, bounded by one total deadline (`timeout`, from
connecting to the last byte; `qss.http_client`) and its reply by `max_response` bytes; watch
streams are bounded the same way (`reconciler.store.etcd_watch`). Several endpoints: a call
that cannot reach one goes on to the next, and the one that answered is asked first next
time. A read goes on after any failure to get an answer; a write only when it surely was
not sent (connection refused, no such host): one that timed out or lost its connection may
have been applied, and is reported as StoreUnavailable rather than applied twice.

What the gateway's JSON looks like is `reconciler.store.etcd_wire`'s business.
"""

from __future__ import annotations

import errno
import http.client
import socket
import weakref
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from qss.errors import ReplyTooLarge, TransferError, TransferTimedOut, TransferUnavailable
from qss.http_client import HttpPool
from reconciler.store import etcd_wire as wire
from reconciler.store.base import (
    Compare,
    Delete,
    DeleteResult,
    KeyValue,
    LeaseId,
    Put,
    PutResult,
    RangeResult,
    TxnOp,
    TxnResult,
    check_key,
    check_lease,
    check_limit,
    check_revision,
    check_ttl,
    check_txn,
)
from reconciler.store.errors import (
    Compacted,
    InvalidReply,
    LeaseNotFound,
    StoreError,
    StoreUnavailable,
)
from reconciler.store.etcd_watch import EtcdWatch, find_compact_revision

DEFAULT_TIMEOUT = 10.0
MAX_RESPONSE = 64 * 1024 * 1024
WATCH_RESYNC = 10.0

_JSON = {"Content-Type": "application/json"}
# A connection that failed in one of these ways never carried the request.
_NOT_SENT_ERRNOS = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}


class EtcdStore:
    """The store on the etcd cluster at `endpoints` ((host, port) pairs, tried in order)."""

    def __init__(
        self,
        endpoints: Sequence[tuple[str, int]],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_response: int = MAX_RESPONSE,
        watch_resync: float = WATCH_RESYNC,
    ) -> None:
        if not endpoints:
            raise ValueError("an etcd store needs at least one endpoint")
        if not timeout > 0 or not watch_resync > 0 or max_response < 1:
            raise ValueError("timeout, watch_resync and max_response must be positive")
        self.endpoints = tuple(endpoints)
        self.names = tuple(_name(host, port) for host, port in self.endpoints)
        self.url = "etcd://" + ",".join(self.names)
        self.timeout = timeout
        self.max_response = max_response
        self.watch_resync = watch_resync
        self.reader = wire.Reader(self.url)
        self._pools = [HttpPool("http", host, port, timeout=timeout) for host, port in endpoints]
        self._preferred = 0
        self._watches: weakref.WeakSet[EtcdWatch] = weakref.WeakSet()

    # -- reads ------------------------------------------------------------------------------

    def revision(self) -> int:
        body = {"key": wire.b64(b"\0"), "count_only": True}
        return self.reader.revision(self.call("revision", "/v3/kv/range", body, idempotent=True))

    def get(self, key: str, *, revision: int | None = None) -> KeyValue | None:
        check_key(key)
        found = self._range(key, exact=True, revision=revision, limit=0)
        return found.kvs[0] if found.kvs else None

    def range(self, prefix: str, *, revision: int | None = None, limit: int = 0) -> RangeResult:
        check_key(prefix, empty_ok=True)
        check_limit(limit)
        return self._range(prefix, exact=False, revision=revision, limit=limit)

    def _range(self, prefix: str, *, exact: bool, revision: int | None, limit: int) -> RangeResult:
        check_revision(revision)
        body = wire.range_body(prefix, exact=exact, limit=limit, revision=revision)
        what = "range" if revision is None else f"range at revision {revision}"
        return self.reader.range_result(self.call(what, "/v3/kv/range", body, idempotent=True))

    # -- writes -----------------------------------------------------------------------------

    def put(self, key: str, value: bytes, *, lease: LeaseId | None = None) -> PutResult:
        op = Put(key, value, lease)
        reply = self.call(f"put {key!r}", "/v3/kv/put", wire.put_body(op), idempotent=False)
        return self.reader.put_result(reply, self.reader.revision(reply))

    def delete(self, key: str, *, prefix: bool = False) -> DeleteResult:
        op = Delete(key, prefix)
        body = wire.delete_body(op)
        reply = self.call(f"delete {key!r}", "/v3/kv/deleterange", body, idempotent=False)
        return self.reader.delete_result(reply, self.reader.revision(reply))

    def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[TxnOp] = (),
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        check_txn(compares, success, failure)
        body = wire.txn_body(compares, success, failure)
        reply = self.call("txn", "/v3/kv/txn", body, idempotent=False)
        return self.reader.txn_result(reply, success, failure)

    def compact(self, revision: int) -> None:
        check_revision(revision)
        # physical: answer once the history is really gone, so a watch opened after this
        # call returns is told Compacted rather than served what is left of it.
        body = {"revision": str(revision), "physical": True}
        self.call(f"compact at {revision}", "/v3/kv/compaction", body, idempotent=False)

    # -- leases -----------------------------------------------------------------------------

    def grant(self, ttl: int) -> LeaseId:
        check_ttl(ttl)
        reply = self.call("lease grant", "/v3/lease/grant", {"TTL": str(ttl)}, idempotent=False)
        if reply.get("error"):
            raise StoreError(f"{self.url}: lease grant: {str(reply['error'])[:200]}")
        lease = self.reader.integer(reply, "ID")
        if lease < 1:
            raise InvalidReply(f"{self.url}: lease grant: no lease id in the reply")
        return LeaseId(lease)

    def keep_alive(self, lease: LeaseId) -> int:
        check_lease(lease)
        what = f"keep-alive of lease {lease:x}"
        # A stream on the wire: one request line in, one result line out, then it ends.
        reply = self.call(what, "/v3/lease/keepalive", {"ID": str(lease)}, idempotent=True)
        if "error" in reply:
            raise self.reader.failure(what, 200, wire.encode(reply))
        result = reply.get("result")
        if not isinstance(result, dict):
            raise InvalidReply(f"{self.url}: {what}: invalid reply: no result")
        ttl = self.reader.integer(result, "TTL")
        if ttl < 1:  # etcd answers a lease that is gone with no TTL, not with an error
            raise LeaseNotFound(
                f"{self.url}: {what}: lease not found (never granted, expired or revoked)"
            )
        return ttl

    def revoke(self, lease: LeaseId) -> None:
        check_lease(lease)
        what = f"revoke of lease {lease:x}"
        body = {"ID": str(lease)}
        try:
            self.call(what, "/v3/lease/revoke", body, idempotent=False)
        except _NoSuchPath:
            # etcd 3.4 and older put lease revocation under /v3/kv/.
            self.call(what, "/v3/kv/lease/revoke", body, idempotent=False)

    # -- watch ------------------------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int) -> EtcdWatch:
        check_key(prefix, empty_ok=True)
        check_revision(start_revision)
        watch = EtcdWatch(self, prefix, start_revision)
        self._watches.add(watch)
        return watch

    # -- calls ------------------------------------------------------------------------------

    def call(self, what: str, path: str, body: dict[str, Any], *, idempotent: bool) -> wire.Json:
        """POST `body` to `path`; the reply, parsed, or the StoreError it stands for."""
        status, data = self._post(what, path, wire.encode(body), idempotent=idempotent)
        if status == 200:
            return self.reader.parse(data)
        if wire.is_compacted(data):
            compacted = find_compact_revision(self)
            raise Compacted(f"{self.url}: {what}: compacted at revision {compacted}", compacted)
        if status == 404 and wire.error_of(data)[0] is None:
            raise _NoSuchPath(f"{self.url}: {what}: the gateway has no {path}")
        raise self.reader.failure(what, status, data)

    def _post(self, what: str, path: str, body: bytes, *, idempotent: bool) -> tuple[int, bytes]:
        failures: list[tuple[str, str]] = []
        connect_only = True
        count = len(self._pools)
        first = self._preferred
        for step in range(count):
            index = (first + step) % count
            try:
                reply = self._pools[index].request(
                    "POST", path, body=body, headers=_JSON, limit=self.max_response
                )
            except ReplyTooLarge as error:
                raise InvalidReply(f"{self.url}: {what}: {error}") from error
            except TransferUnavailable as error:  # timed out included
                not_sent = _not_sent(error)
                connect_only = connect_only and not_sent
                failures.append((self.names[index], _why(error, self.timeout)))
                if not (idempotent or not_sent):
                    self._preferred = (index + 1) % count  # ask another one first next time
                    break
                continue
            except TransferError as error:
                raise InvalidReply(f"{self.url}: {what}: {error}") from error
            self._preferred = index
            return reply.status, reply.body
        if connect_only:
            raise StoreUnavailable(f"{self.url}: cannot connect: {self._details(failures)}")
        maybe = "" if idempotent else " (it may or may not have been applied)"
        raise StoreUnavailable(f"{self.url}: {what}: {self._details(failures)}{maybe}")

    def _details(self, failures: list[tuple[str, str]]) -> str:
        if len(self.names) == 1:
            return failures[0][1]
        return "; ".join(f"{name}: {why}" for name, why in failures)

    def close(self) -> None:
        for watch in list(self._watches):
            watch.close()
        for pool in self._pools:
            pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EtcdStore({self.url!r})"


class _NoSuchPath(StoreError):
    """The gateway does not know the path (an older etcd): try its older name."""


def _name(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _not_sent(error: TransferUnavailable) -> bool:
    if isinstance(error, TransferTimedOut):
        return False
    cause = error.__cause__
    if isinstance(cause, socket.gaierror):
        return True
    return isinstance(cause, OSError) and cause.errno in _NOT_SENT_ERRNOS


def _why(error: TransferUnavailable, timeout: float) -> str:
    """A few words on why, for the one-line message."""
    cause = error.__cause__
    if isinstance(error, TransferTimedOut):
        return f"no answer within {timeout:g} s"
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve the host name ({cause.strerror})"
    if isinstance(cause, ConnectionResetError):
        return "connection reset"
    if isinstance(cause, http.client.RemoteDisconnected):
        return "connection closed without an answer"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    return str(error)
