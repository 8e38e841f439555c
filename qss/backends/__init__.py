"""Storage backends: where shares and manifests are kept (the I/O side of qss).

`open_backend` turns a URL into a Backend (`qss.backends.base`):

    dir:/abs/path  or  dir:relative/path     DirectoryBackend   (the embedded default)
    redis://host[:port][/db][?prefix=p]      RedisBackend       (Redis, and 0-db for get/put)
    http://host:port[/path], https://...     HttpBackend        (a BlobServer, e.g. a node agent)

A directory must exist already: a missing one reads as an unmounted disk (BackendUnavailable),
never as a new, empty store.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import SplitResult, parse_qs, urlsplit

from qss.backends.base import Backend, BackendInfo, check_key
from qss.backends.directory import DirectoryBackend
from qss.backends.http import DEFAULT_TIMEOUT as HTTP_TIMEOUT
from qss.backends.http import BlobServer, HttpBackend
from qss.backends.redis import DEFAULT_PORT, DEFAULT_PREFIX, RedisBackend
from qss.backends.redis import DEFAULT_TIMEOUT as REDIS_TIMEOUT
from qss.errors import BackendError

__all__ = [
    "Backend",
    "BackendInfo",
    "BlobServer",
    "DirectoryBackend",
    "HttpBackend",
    "RedisBackend",
    "check_key",
    "open_backend",
]

ACCEPTED = "dir:PATH, redis://HOST[:PORT][/DB], http(s)://HOST[:PORT][/PREFIX]"


def open_backend(
    url: str,
    *,
    name: str | None = None,
    failure_domain: str | None = None,
    token: str | None = None,
    timeout: float | None = None,
) -> Backend:
    """The backend `url` names. `name` defaults to the directory's last component or the
    server's host:port, `failure_domain` to `name`. `token` is the bearer token of an http
    backend or the password of a redis one; `timeout` the seconds each of its calls may take
    in all (its default otherwise; a directory takes none). Raises BackendError for a URL it
    cannot use."""
    if timeout is not None and not timeout > 0:
        raise _malformed(url, f"the timeout must be a positive number of seconds, not {timeout}")
    if url.startswith("dir:"):
        path = url[len("dir:") :]
        if not path or path.startswith("//"):
            raise _malformed(url, "give a path after 'dir:' (dir:/abs/path or dir:relative)")
        if token is not None:
            raise _malformed(url, "a directory backend takes no token")
        return DirectoryBackend(Path(path), name=name, failure_domain=failure_domain)
    scheme = url.partition("://")[0]
    if scheme == "redis":
        return _open_redis(url, name, failure_domain, token, timeout)
    if scheme in ("http", "https"):
        parts = urlsplit(url)
        if not parts.hostname or parts.query or parts.fragment or parts.username is not None:
            raise _malformed(url, "expected http(s)://HOST[:PORT][/PREFIX], nothing more")
        _port(url, parts)
        return HttpBackend(
            url,
            name=name,
            failure_domain=failure_domain,
            token=token,
            timeout=timeout or HTTP_TIMEOUT,
        )
    raise _malformed(url, "unknown kind of backend")


def _open_redis(
    url: str,
    name: str | None,
    failure_domain: str | None,
    password: str | None,
    timeout: float | None,
) -> RedisBackend:
    parts = urlsplit(url)
    if not parts.hostname:
        raise _malformed(url, "no host")
    if parts.username is not None or parts.password is not None:
        raise _malformed(url, "no credentials in the URL: pass the password as the token")
    port = _port(url, parts) or DEFAULT_PORT
    db_text = parts.path.strip("/")
    if db_text and not db_text.isdigit():
        raise _malformed(url, f"database {db_text!r} is not a number")
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    if set(query) - {"prefix"} or parts.fragment or any(len(v) > 1 for v in query.values()):
        raise _malformed(url, "the only option is one ?prefix=...")
    prefix = query.get("prefix", [DEFAULT_PREFIX])[0]
    return RedisBackend(
        parts.hostname,
        port,
        int(db_text or 0),
        prefix=prefix,
        name=name,
        failure_domain=failure_domain,
        password=password,
        timeout=timeout or REDIS_TIMEOUT,
    )


def _port(url: str, parts: SplitResult) -> int | None:
    try:
        port = parts.port  # urlsplit checks the port only when it is read
    except ValueError:
        port = 0
    if port == 0:
        raise _malformed(url, "the port must be a number from 1 to 65535")
    return port


def _malformed(url: str, why: str) -> BackendError:
    return BackendError(f"backend URL {url!r}: {why}; accepted forms: {ACCEPTED}")
