"""Blobs in a Redis-protocol store: Redis itself, or anything that speaks its basic commands.

Each blob is one string value under `<prefix><key>` (prefix `qss:` unless told), written with
one SET, which is atomic. Only PING, GET, SET, EXISTS, DEL and SCAN are sent, and no SET reply
is checked beyond "not an error", so that ThreeFold's 0-db, which answers SET with the key,
works for put, get, exists and delete. Listing uses Redis's `SCAN cursor MATCH pattern`;
0-db's SCAN has neither cursor numbers nor MATCH, so `list` needs a real Redis (and the
results are filtered on the prefix here as well, in case a server ignores MATCH).

Every socket has connect and read timeouts; connection errors and timeouts become
BackendUnavailable; a broken connection is retried once at once (a pooled one may have gone
stale), a timeout is not.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NoReturn

import redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from qss.backends.base import BackendInfo, check_key
from qss.errors import BackendError, BackendUnavailable, BlobNotFound

DEFAULT_PREFIX = "qss:"
DEFAULT_PORT = 6379
SCAN_BATCH = 1000

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


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
        timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.db = db
        self.prefix = prefix
        self.name = name if name is not None else _default_name(host, port, db)
        self.failure_domain = failure_domain if failure_domain is not None else self.name
        self._client = redis.Redis(
            host=host,
            port=port,
            db=db,
            password=password,
            socket_connect_timeout=connect_timeout,
            socket_timeout=timeout,
            # Once at once on a broken connection (a pooled one may be stale); a timeout is
            # not retried, so a call never takes much longer than `timeout`.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            driver_info=None,  # no CLIENT SETINFO: 0-db does not know it
            decode_responses=False,
        )

    def __repr__(self) -> str:
        return f"RedisBackend({self.url!r}, prefix={self.prefix!r}, name={self.name!r})"

    @property
    def url(self) -> str:
        return f"redis://{_netloc(self.host, self.port)}/{self.db}"

    # -- the Backend protocol ---------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        stored = self._stored_key(key)
        try:
            self._client.set(stored, data)
        except RedisError as exc:
            self._fail("put", key, exc)

    def get(self, key: str) -> bytes:
        stored = self._stored_key(key)
        try:
            value = self._client.get(stored)
        except RedisError as exc:
            self._fail("get", key, exc)
        if value is None:
            raise BlobNotFound(f"{self._where()}: no blob {key!r}")
        if not isinstance(value, bytes):
            raise BackendError(f"{self._where()}: get {key!r}: unexpected reply {type(value)}")
        return value

    def exists(self, key: str) -> bool:
        stored = self._stored_key(key)
        try:
            return bool(self._client.exists(stored))
        except RedisError as exc:
            self._fail("exists", key, exc)

    def delete(self, key: str) -> None:
        stored = self._stored_key(key)
        try:
            self._client.delete(stored)
        except RedisError as exc:
            self._fail("delete", key, exc)

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
        self._client.connection_pool.disconnect()

    # -- beyond the protocol ----------------------------------------------------------------

    def ping(self) -> None:
        """Raise BackendUnavailable unless the server answers PING."""
        try:
            self._client.ping()
        except RedisError as exc:
            self._fail("ping", "", exc)

    # -- helpers ----------------------------------------------------------------------------

    def _scan(self, full_prefix: bytes, pattern: str, prefix: str) -> Iterator[str]:
        cursor = 0
        skip = len(self.prefix.encode())
        try:
            while True:
                cursor, batch = self._client.scan(cursor=cursor, match=pattern, count=SCAN_BATCH)
                for stored in batch:
                    if isinstance(stored, bytes) and stored.startswith(full_prefix):
                        yield stored[skip:].decode("utf-8", "replace")
                if cursor == 0:
                    return
        except RedisError as exc:
            self._fail("list", prefix, exc)

    def _stored_key(self, key: str) -> bytes:
        try:
            check_key(key)
        except BackendError as exc:
            raise BackendError(f"{self._where()}: {exc}") from None
        return (self.prefix + key).encode()

    def _where(self) -> str:
        return f"redis backend {self.name!r} ({self.url}, prefix {self.prefix!r})"

    def _fail(self, op: str, key: str, exc: RedisError) -> NoReturn:
        what = f"{op} {key!r}" if key else op
        if isinstance(exc, AuthenticationError):
            raise BackendError(f"{self._where()}: {what}: authentication failed: {exc}") from exc
        if isinstance(exc, RedisConnectionError | RedisTimeoutError):
            raise BackendUnavailable(f"{self._where()} is unavailable: {what}: {exc}") from exc
        raise BackendError(f"{self._where()}: {what}: {exc}") from exc


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _default_name(host: str, port: int, db: int) -> str:
    return _netloc(host, port) + (f"/{db}" if db else "")
