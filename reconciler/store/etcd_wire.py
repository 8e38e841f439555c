"""etcd's v3 JSON gateway as values: request bodies in, replies checked and decoded out. No
I/O; `reconciler.store.etcd` sends what this builds.

The gateway speaks protobuf's JSON mapping, with these quirks (etcd 3.4 and 3.5 alike):
keys and values are base64; 64-bit integers are strings ("revision": "5"); fields at their
zero value are left out (no "kvs" when none match, no "succeeded" when a transaction took its
failure branch, no "type" on a PUT event, no "TTL" from a keep-alive of a lease that is gone);
streaming calls (watch, keep-alive) answer one `{"result": ...}` or `{"error": ...}` object
per line; errors of unary calls are `{"error", "code", "message"}` with a gRPC code.

Every reply is untrusted: anything not of the expected shape is InvalidReply, never a crash.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.store.base import (
    Compare,
    Delete,
    DeleteResult,
    Event,
    EventKind,
    KeyValue,
    LeaseId,
    Put,
    PutResult,
    Range,
    RangeResult,
    Target,
    TxnOp,
    TxnResult,
    prefix_end,
)
from reconciler.store.errors import (
    BadRequest,
    FutureRevision,
    InvalidReply,
    LeaseNotFound,
    StoreError,
    StoreUnavailable,
)

Json = dict[str, Any]

_INT64 = re.compile(r"-?[0-9]{1,19}")  # ASCII digits only: str.isdigit takes "²" too

_OPS = {"=": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}
_TARGETS = {
    Target.VERSION: ("VERSION", "version"),
    Target.CREATE: ("CREATE", "create_revision"),
    Target.MOD: ("MOD", "mod_revision"),
    Target.VALUE: ("VALUE", "value"),
}

# gRPC status codes that the gateway passes on
_INVALID_ARGUMENT, _NOT_FOUND, _RESOURCE_EXHAUSTED, _FAILED_PRECONDITION = 3, 5, 8, 9
_OUT_OF_RANGE, _UNAVAILABLE, _DEADLINE_EXCEEDED = 11, 14, 4


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def key_range(prefix: str, *, exact: bool) -> Json:
    """`key` and `range_end` for one key or for every key under `prefix`. etcd has no empty
    key: the empty prefix is key "\\0" with range_end "\\0", which etcd reads as all keys."""
    low = prefix.encode()
    if exact:
        return {"key": b64(low)}
    high = prefix_end(low)
    if not low:
        return {"key": b64(b"\0"), "range_end": b64(b"\0")}
    return {"key": b64(low), "range_end": b64(high or b"\0")}


def range_body(prefix: str, *, exact: bool, limit: int, revision: int | None) -> Json:
    body = key_range(prefix, exact=exact)
    if limit:
        body["limit"] = str(limit)
    if revision is not None:
        body["revision"] = str(revision)
    return body


def put_body(op: Put) -> Json:
    body: Json = {"key": b64(op.key.encode()), "value": b64(op.value), "prev_kv": True}
    if op.lease is not None:
        body["lease"] = str(op.lease)
    return body


def delete_body(op: Delete) -> Json:
    return {**key_range(op.key, exact=not op.prefix), "prev_kv": True}


def txn_body(
    compares: Sequence[Compare], success: Sequence[TxnOp], failure: Sequence[TxnOp]
) -> Json:
    return {
        "compare": [_compare(c) for c in compares],
        "success": [_request_op(op) for op in success],
        "failure": [_request_op(op) for op in failure],
    }


def _compare(compare: Compare) -> Json:
    target, field = _TARGETS[compare.target]
    operand = compare.operand
    body: Json = {
        "key": b64(compare.key.encode()),
        "target": target,
        "result": _OPS[compare.op.value],
    }
    body[field] = b64(operand) if isinstance(operand, bytes) else str(operand)
    return body


def _request_op(op: TxnOp) -> Json:
    if isinstance(op, Put):
        return {"request_put": put_body(op)}
    if isinstance(op, Delete):
        return {"request_delete_range": delete_body(op)}
    return {"request_range": range_body(op.key, exact=not op.prefix, limit=op.limit, revision=None)}


# ---------------------------------------------------------------------------------------------
# Replies


class Reader:
    """Decodes the replies of one store, naming it (`where`) in every error."""

    def __init__(self, where: str) -> None:
        self.where = where

    def parse(self, body: bytes) -> Json:
        try:
            reply = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nesting too deep
            raise self._bad(f"not JSON: {body[:80]!r}") from None
        if not isinstance(reply, dict):
            raise self._bad(f"not a JSON object: {body[:80]!r}")
        return reply

    def revision(self, reply: Json) -> int:
        header = self._object(reply, "header")
        revision = self.integer(header, "revision")
        if revision < 1:
            raise self._bad(f"a header without a revision: {header!r}"[:200])
        return revision

    def range_result(self, reply: Json, revision: int | None = None) -> RangeResult:
        kvs = tuple(self.kv(item) for item in self._list(reply, "kvs"))
        count = self.integer(reply, "count")
        if count < len(kvs):
            raise self._bad(f"a range of {len(kvs)} keys that counts {count}")
        more = self._bool(reply, "more")
        return RangeResult(kvs, count, more, self.revision(reply) if revision is None else revision)

    def put_result(self, reply: Json, revision: int) -> PutResult:
        prev = reply.get("prev_kv")
        return PutResult(revision, None if prev is None else self.kv(prev))

    def delete_result(self, reply: Json, revision: int) -> DeleteResult:
        prev = tuple(self.kv(item) for item in self._list(reply, "prev_kvs"))
        deleted = self.integer(reply, "deleted")
        if deleted != len(prev):
            raise self._bad(f"deleted {deleted} keys but returned {len(prev)}")
        return DeleteResult(revision, deleted, prev)

    def txn_result(
        self, reply: Json, success: Sequence[TxnOp], failure: Sequence[TxnOp]
    ) -> TxnResult:
        revision = self.revision(reply)
        succeeded = self._bool(reply, "succeeded")
        branch = success if succeeded else failure
        items = self._list(reply, "responses")
        if len(items) != len(branch):
            raise self._bad(f"{len(items)} responses to a branch of {len(branch)} operations")
        responses: list[PutResult | DeleteResult | RangeResult] = []
        for op, item in zip(branch, items, strict=True):
            if not isinstance(item, dict):
                raise self._bad(f"a transaction response that is not an object: {item!r}"[:200])
            if isinstance(op, Put):
                responses.append(self.put_result(self._object(item, "response_put"), revision))
            elif isinstance(op, Delete):
                inner = self._object(item, "response_delete_range")
                responses.append(self.delete_result(inner, revision))
            elif isinstance(op, Range):
                inner = self._object(item, "response_range")
                responses.append(self.range_result(inner, revision))
        return TxnResult(succeeded, revision, tuple(responses))

    def kv(self, item: Any) -> KeyValue:
        if not isinstance(item, dict):
            raise self._bad(f"a key-value that is not an object: {item!r}"[:200])
        lease = self.integer(item, "lease")
        return KeyValue(
            key=self.key(item),
            value=self.data(item, "value"),
            create_revision=self.integer(item, "create_revision"),
            mod_revision=self.integer(item, "mod_revision"),
            version=self.integer(item, "version"),
            lease=LeaseId(lease) if lease else None,
        )

    def event(self, item: Any) -> Event:
        if not isinstance(item, dict):
            raise self._bad(f"an event that is not an object: {item!r}"[:200])
        kind = item.get("type", "PUT")
        kv = self._object(item, "kv")
        key, revision = self.key(kv), self.integer(kv, "mod_revision")
        prev = self.kv(item["prev_kv"]) if item.get("prev_kv") is not None else None
        if kind == "PUT":
            return Event(EventKind.PUT, key, revision, self.kv(kv), prev)
        if kind == "DELETE":
            return Event(EventKind.DELETE, key, revision, None, prev)
        raise self._bad(f"an event of unknown type {kind!r}"[:200])

    def key(self, item: Json) -> str:
        raw = self.data(item, "key")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self._bad(f"a key that is not UTF-8: {raw[:40]!r}") from None

    def data(self, item: Json, name: str) -> bytes:
        raw = item.get(name, "")
        if not isinstance(raw, str):
            raise self._bad(f"{name} is not base64 text: {raw!r}"[:200])
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise self._bad(f"{name} is not base64: {raw[:40]!r}") from None

    def integer(self, item: Json, name: str) -> int:
        raw = item.get(name, "0")
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and _INT64.fullmatch(raw):
            return int(raw)
        raise self._bad(f"{name} is not an integer: {raw!r}"[:200])

    def _object(self, item: Json, name: str) -> Json:
        value = item.get(name, {})
        if not isinstance(value, dict):
            raise self._bad(f"{name} is not an object: {value!r}"[:200])
        return value

    def _list(self, item: Json, name: str) -> list[Any]:
        value = item.get(name, [])
        if not isinstance(value, list):
            raise self._bad(f"{name} is not a list: {value!r}"[:200])
        return value

    def _bool(self, item: Json, name: str) -> bool:
        value = item.get(name, False)
        if not isinstance(value, bool):
            raise self._bad(f"{name} is not true or false: {value!r}"[:200])
        return value

    def _bad(self, what: str) -> InvalidReply:
        return InvalidReply(f"{self.where}: invalid reply: {what}")

    def failure(self, what: str, status: int, body: bytes) -> StoreError:
        """The error for a reply that is not a success. Compacted needs the compaction's
        revision, which etcd's message lacks: the caller finds it (`is_compacted`)."""
        code, message = error_of(body)
        text = f"{self.where}: {what}: {message or f'HTTP {status}'}"
        if code == _NOT_FOUND and "lease not found" in message:
            return LeaseNotFound(f"{text} (never granted, expired or revoked)")
        if code == _OUT_OF_RANGE and "future revision" in message:
            return FutureRevision(text)
        if code in (_INVALID_ARGUMENT, _RESOURCE_EXHAUSTED, _FAILED_PRECONDITION):
            return BadRequest(text)
        if code in (_UNAVAILABLE, _DEADLINE_EXCEEDED) or status >= 500:
            return StoreUnavailable(text)
        return StoreError(text)


def error_of(body: bytes) -> tuple[int | None, str]:
    """The gRPC code and message of an error reply (None and the text when not JSON)."""
    try:
        reply = json.loads(body)
    except (ValueError, RecursionError):
        return None, body.decode("utf-8", "replace").strip()[:200]
    if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
        reply = reply["error"]  # the form of streaming calls
    if not isinstance(reply, dict):
        return None, str(reply)[:200]
    code = reply.get("code", reply.get("grpc_code"))
    message = reply.get("message") or reply.get("error") or ""
    return (code if isinstance(code, int) else None), str(message)[:300]


def is_compacted(body: bytes) -> bool:
    code, message = error_of(body)
    return code == _OUT_OF_RANGE and "compacted" in message
