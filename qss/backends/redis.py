"""Blobs in a Redis-protocol store: Redis itself, or anything that speaks its basic commands.

Each blob is one string value under `<prefix><key>` (prefix `qss:` unless told), written with
one SET, which is atomic. Only AUTH, SELECT, PING, GET, SET, EXISTS, DEL and SCAN are sent,
and no SET reply is checked beyond "not an error", so that ThreeFold's 0-db, which answers SET
with the key, works for put, get, exists and delete. Listing uses Redis's `SCAN cursor MATCH
pattern`; 0-db's SCAN has neither cursor numbers nor MATCH, so `list` needs a real Redis (and
the results are filtered on the prefix here as well, in case a server ignores MATCH).

The server is talked to with `qss.backends.resp`, which bounds every reply: a value larger than
the get's limit is refused from its header, unread (InvalidBlob), a listing page is capped, and
every call must be done within `timeout` seconds, however slowly the server answers.
Connection errors and timeouts become BackendUnavailable; a pooled connection found closed is
replaced once at once, a timeout is not retried.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NoReturn

from qss.backends.base import MAX_BLOB, MAX_KEY, BackendInfo, check_key
from qss.backends.resp import MAX_LINE, RespClient, Value
from qss.errors import (
    BackendError,
    BackendUnavailable,
    BlobNotFound,
    ErrorReply,
    InvalidBlob,
    ReplyTooLarge,
    TransferError,
    TransferUnavailable,
)

DEFAULT_PREFIX = "qss:"
DEFAULT_PORT = 6379
DEFAULT_TIMEOUT = 30.0  # seconds for a whole call, from connecting to the last byte
SCAN_BATCH = 1000
# A page of SCAN is about SCAN_BATCH keys; a server may return more, never this many.
SCAN_MAX_KEYS = 100 * SCAN_BATCH
SCAN_BUDGET = 16 * 1024 * 1024

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
_AUTH_REPLIES = ("NOAUTH", "WRONGPASS", "ERR invalid password", "ERR AUTH")


def escape_glob(text: str) -> str:
    """`text` as a Redis MATCH pattern that matches only itself."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


class RedisBackend:
    """Blobs under `prefix` in database `db` of the Redis-protocol server at host:port."""

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        db: int = 0,
        *,
        prefix: str = DEFAULT_PREFIX,
        name: str | None = None,
        failure_domain: str | None = None,
        password: str | None = None,
        connect_timeout: float = 5.0,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self.db = db
        self.prefix = prefix
        self.name = name if name is not None else _default_name(host, port, db)
        self.failure_domain = failure_domain if failure_domain is not None else self.name
        if not timeout > 0 or not connect_timeout > 0:
            raise BackendError(
                f"{self._where()}: timeouts must be positive seconds, not {timeout}, "
                f"{connect_timeout}"
            )
        self.timeout = timeout
        self._client = RespClient(
            host,
            port,
            db=db,
            password=password,
            connect_timeout=connect_timeout,
            timeout=timeout,
        )

    def __repr__(self) -> str:
        return f"RedisBackend({self.url!r}, prefix={self.prefix!r}, name={self.name!r})"

    @property
    def url(self) -> str:
        return f"redis://{_netloc(self.host, self.port)}/{self.db}"

    # -- the Backend protocol ---------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        self._call("put", key, "SET", self._stored_key(key), data)

    def get(self, key: str, limit: int = MAX_BLOB) -> bytes:
        value = self._call("get", key, "GET", self._stored_key(key), limit=limit)
        if value is None:
            raise BlobNotFound(f"{self._where()}: no blob {key!r}")
        if not isinstance(value, bytes):
            raise BackendError(f"{self._where()}: get {key!r}: unexpected reply {type(value)}")
        return value

    def exists(self, key: str) -> bool:
        return bool(self._call("exists", key, "EXISTS", self._stored_key(key)))

    def delete(self, key: str) -> None:
        self._call("delete", key, "DEL", self._stored_key(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key that starts with `prefix`; the server is scanned as this is iterated."""
        full_prefix = (self.prefix + prefix).encode()
        pattern = escape_glob(self.prefix + prefix) + "*"
        return self._scan(full_prefix, pattern, prefix)

    def info(self) -> BackendInfo:
        return BackendInfo(url=self.url, kind="redis", free_bytes=None)

    def sync(self) -> None:
        """Nothing to do: a Redis-protocol server's durability is its own configuration
        (appendfsync for redis-server; 0-db writes append-only)."""

    def close(self) -> None:
        self._client.close()

    # -- beyond the protocol ----------------------------------------------------------------

    def ping(self) -> None:
        """Raise BackendUnavailable unless the server answers PING."""
        self._call("ping", "", "PING")

    # -- helpers ----------------------------------------------------------------------------

    def _scan(self, full_prefix: bytes, pattern: str, prefix: str) -> Iterator[str]:
        cursor = b"0"
        skip = len(self.prefix.encode())
        # Keys longer than any of ours may be listed (and then dropped), but not without end.
        key_limit = max(MAX_LINE, len(full_prefix) + MAX_KEY)
        while True:
            page = self._call(
                "list",
                prefix,
                *("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_BATCH),
                limit=key_limit,
                budget=SCAN_BUDGET,
                max_items=SCAN_MAX_KEYS,
            )
            if (
                not isinstance(page, list)
                or len(page) != 2
                or not isinstance(page[0], bytes)
                or not page[0].isdigit()
                or not isinstance(page[1], list)
            ):
                raise BackendError(f"{self._where()}: list {prefix!r}: not a SCAN reply")
            cursor, batch = page[0], page[1]
            for stored in batch:
                if isinstance(stored, bytes) and stored.startswith(full_prefix):
                    yield stored[skip:].decode("utf-8", "replace")
            if int(cursor) == 0:
                return

    def _call(
        self,
        op: str,
        key: str,
        *args: bytes | str | int,
        limit: int = MAX_LINE,
        budget: int | None = None,
        max_items: int = 0,
    ) -> Value:
        what = f"{op} {key!r}" if key else op
        try:
            return self._client.call(*args, limit=limit, budget=budget, max_items=max_items)
        except ErrorReply as exc:
            if exc.command == "AUTH" or exc.message.startswith(_AUTH_REPLIES):
                self._fail(f"{what}: authentication failed: {exc.message}", exc)
            self._fail(f"{what}: {exc.message}", exc)
        except TransferUnavailable as exc:  # timed out included
            raise BackendUnavailable(f"{self._where()} is unavailable: {what}: {exc}") from exc
        except ReplyTooLarge as exc:
            error = InvalidBlob if op == "get" else BackendError
            raise error(f"{self._where()}: {what}: {exc}") from exc
        except TransferError as exc:
            self._fail(f"{what}: {exc}", exc)

    def _stored_key(self, key: str) -> bytes:
        try:
            check_key(key)
        except BackendError as exc:
            raise BackendError(f"{self._where()}: {exc}") from None
        return (self.prefix + key).encode()

    def _where(self) -> str:
        return f"redis backend {self.name!r} ({self.url}, prefix {self.prefix!r})"

    def _fail(self, message: str, exc: Exception) -> NoReturn:
        raise BackendError(f"{self._where()}: {message}") from exc


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _default_name(host: str, port: int, db: int) -> str:
    return _netloc(host, port) + (f"/{db}" if db else "")
