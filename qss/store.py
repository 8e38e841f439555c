"""Put, get, scrub, repair and remove objects over a set of backends: the imperative shell.

Blob keys (built here from hex and integers only, never from an object's name):

    s/<object nonce>/<share>/<segment>   one erasure-coded block
    m/<object id>/<version>              a manifest version, on every backend holding a share

Shares live under the object's random nonce because the object id (the hash of the manifest
content, share hashes included) is only known once every segment is encoded; the nonce is part
of that content, so the id still pins it.

A put encodes segments in a thread pool (zfec and AES-GCM release the GIL) with a bounded
number in flight, so memory stays a few segments whatever the object's size, then commits the
manifest. A get verifies every block's hash before decoding, falls through to other shares on
a missing, corrupt or unreachable one, and writes the output through a temporary file that is
renamed only when every segment authenticated. Repair needs no data key.

The data key is opened with the storage key, or by a recipient with its X-Wing key
(`qss.recipients`), and checked against the content's key commitment before any share is
fetched. Sharing writes a new manifest version with more entries; unsharing writes one with
fewer and then deletes the older versions, which still hold the removed entries.

Every read is bounded: a block is asked for with the exact length its segment gives it, a
manifest with the most a manifest may have (a backend refuses anything larger unread, and a
block that cannot be the share reads as corrupt); and no backend's failure is passed over in
silence: listings and removals say which backends failed and why, beside what the others hold.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from threading import Lock
from typing import TypeVar

from qss.backends.base import Backend
from qss.codec import (
    DEFAULT_SEGMENT,
    KEY_BYTES,
    NONCE_PREFIX_BYTES,
    OBJECT_NONCE_BYTES,
    EncodedSegment,
    ObjectLayout,
    SegmentCodec,
    key_id,
    share_hash,
    unwrap_key,
    wrap_key,
)
from qss.durable import atomic_writer
from qss.errors import (
    BackendError,
    BlobNotFound,
    DecryptionError,
    IntegrityError,
    InvalidBlob,
    InvalidParameters,
    ManifestError,
    NotEnoughShares,
    ObjectNotFound,
    PlacementError,
    RecipientError,
    StorageError,
)
from qss.manifest import MAX_MANIFEST_BYTES, Content, Manifest, Placement, check_name, decode
from qss.placement import Site, check_spread, place, replacements, spread_warnings
from qss.recipients import (
    Encapsulate,
    Recipient,
    RecipientKey,
    check_commitment,
    key_commitment,
    merged,
    open_entry,
    seal,
)
from qss.reports import (
    SEVERITY,
    BackendFailure,
    GetResult,
    Inventory,
    Listing,
    ObjectHealth,
    PutResult,
    RemoveResult,
    RepairResult,
    ShareHealth,
    ShareProblem,
    ShareResult,
    ShareStatus,
)

T = TypeVar("T")
_OBJECT_ID = re.compile(r"[0-9a-f]{64}")
Progress = Callable[[int], None]


def share_key(manifest_or_nonce: Manifest | bytes, share: int, segment: int) -> str:
    nonce = (
        manifest_or_nonce.content.object_nonce
        if isinstance(manifest_or_nonce, Manifest)
        else manifest_or_nonce
    )
    return f"s/{nonce.hex()}/{share}/{segment}"


def manifest_key(object_id: str, version: int) -> str:
    return f"m/{object_id}/{version:010d}"


def open_data_key(
    manifest: Manifest,
    *,
    storage_key: bytes | None = None,
    recipient: RecipientKey | None = None,
) -> bytes:
    """The object's data key, by the storage key or by `recipient`'s entry (exactly one),
    checked against the content's key commitment when it has one (an entry is trusted only
    when it does). DecryptionError or a RecipientError saying why not."""
    content = manifest.content
    object_id = manifest.object_id
    if (storage_key is None) == (recipient is None):
        raise InvalidParameters("give the storage key or a recipient's key, one of the two")
    if storage_key is not None:
        if key_id(storage_key) != content.key_id:
            raise DecryptionError(
                f"object {object_id[:16]} is encrypted for storage key {content.key_id}; "
                f"the key given is {key_id(storage_key)}"
            )
        data_key = unwrap_key(storage_key, content.wrapped_key)
        how = "the storage key"
    else:
        assert recipient is not None
        if content.key_commitment is None:
            raise RecipientError(
                f"object {object_id[:16]} was stored before key commitments: no entry of it "
                "can be trusted (store it again to share it)"
            )
        data_key = open_entry(object_id, manifest.recipients, recipient)
        how = f"the entry for {recipient.name}"
    if content.key_commitment is not None:
        check_commitment(content.key_commitment, data_key, content.object_nonce, how)
    return data_key


class Store:
    """Objects over `backends`. Thread-safe backends are required (all shipped ones are)."""

    def __init__(self, backends: Sequence[Backend], *, workers: int = 2) -> None:
        names = [backend.name for backend in backends]
        if len(set(names)) != len(names):
            raise PlacementError(f"backend names must be distinct: {sorted(names)}")
        if workers < 1:
            raise StorageError("workers must be at least 1")
        self.backends = {backend.name: backend for backend in backends}
        self.workers = workers
        self._latency: dict[str, float] = dict.fromkeys(self.backends, 0.0)
        self._latency_lock = Lock()

    # -- helpers ---------------------------------------------------------------------------------

    def sites(self) -> list[Site]:
        return [Site(b.name, b.failure_domain) for b in self.backends.values()]

    def _timed_get(self, backend: Backend, key: str, limit: int) -> bytes:
        started = time.perf_counter()
        try:
            return backend.get(key, limit)
        finally:
            elapsed = time.perf_counter() - started
            with self._latency_lock:  # a moving average: fastest backends are asked first
                self._latency[backend.name] = 0.8 * self._latency[backend.name] + 0.2 * elapsed

    def _pipeline(
        self, tasks: Iterable[Callable[[], T]], *, pool: ThreadPoolExecutor
    ) -> Iterator[T]:
        """Run tasks on the pool with at most 2 x workers in flight; results in task order."""
        pending: deque[Future[T]] = deque()
        try:
            for task in tasks:
                pending.append(pool.submit(task))
                while len(pending) >= 2 * self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

    # -- put -------------------------------------------------------------------------------------

    def put(
        self,
        path: Path,
        *,
        storage_key: bytes,
        k: int,
        n: int,
        name: str | None = None,
        segment_size: int = DEFAULT_SEGMENT,
        min_domains: int = 1,
        progress: Progress | None = None,
        recipients: Sequence[Recipient] = (),
        encapsulate: Encapsulate | None = None,
    ) -> PutResult:
        """Store the file at `path`; returns its manifest (whose `object_id` names it), shared
        with `recipients` (their entries made with the X-Wing `encapsulate`).

        Refused before anything is written when the backends cannot give every share its own
        backend, or span fewer than `min_domains` failure domains.
        """
        if len(storage_key) != KEY_BYTES:
            raise DecryptionError(f"the storage key must be {KEY_BYTES} bytes")
        _check_recipients(recipients, encapsulate)
        name = check_name(path.name if name is None else name)
        placement = place(n, self.sites())
        check_spread(placement, min_domains)
        try:
            source = open(path, "rb")  # noqa: SIM115 - closed by the with statement below
        except OSError as error:
            raise StorageError(f"{path}: cannot read: {error.strerror}") from None
        with source:
            status = os.fstat(source.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise InvalidParameters(f"{path}: not a regular file (its size must be known)")
            size = status.st_size
            layout = ObjectLayout(
                size,
                segment_size,
                k,
                n,
                secrets.token_bytes(OBJECT_NONCE_BYTES),
                secrets.token_bytes(NONCE_PREFIX_BYTES),
            )
            data_key = secrets.token_bytes(KEY_BYTES)
            codec = SegmentCodec(layout, data_key)

            def segments() -> Iterator[Callable[[], EncodedSegment]]:
                for index in range(layout.segment_count):
                    plaintext = source.read(layout.plain_length(index))
                    if len(plaintext) != layout.plain_length(index):
                        raise StorageError(f"{path} changed while it was being stored")
                    yield partial(codec.encode, index, plaintext)

            # Two stages, so that writing one segment's blocks overlaps encoding the next:
            # `workers` threads encode, as many write; each stage holds a bounded number of
            # segments, which bounds memory whatever the object's size.
            writes: deque[Future[None]] = deque()
            hashes: list[tuple[str, ...]] = []
            try:
                with (
                    ThreadPoolExecutor(self.workers, thread_name_prefix="qss-encode") as cpu,
                    ThreadPoolExecutor(self.workers, thread_name_prefix="qss-write") as io,
                ):
                    for segment in self._pipeline(segments(), pool=cpu):
                        hashes.append(segment.hashes)
                        writes.append(io.submit(self._write_segment, segment, layout, placement))
                        while len(writes) > 2 * self.workers:
                            writes.popleft().result()
                        if progress is not None:
                            progress(layout.plain_length(segment.index))
                    while writes:
                        writes.popleft().result()
                if source.read(1):
                    raise StorageError(f"{path} changed while it was being stored")
            except OSError as error:
                self._delete_shares(layout.object_nonce)
                raise StorageError(f"{path}: cannot read: {error.strerror}") from None
            except BaseException:
                for pending in writes:
                    pending.cancel()
                self._delete_shares(layout.object_nonce)
                raise
        content = Content(
            name=name,
            size=size,
            segment_size=segment_size,
            k=k,
            n=n,
            object_nonce=layout.object_nonce,
            nonce_prefix=layout.nonce_prefix,
            key_id=key_id(storage_key),
            wrapped_key=wrap_key(storage_key, data_key),
            shares=tuple(hashes),
            key_commitment=key_commitment(data_key, layout.object_nonce),
        )
        try:
            entries = (
                merged((), (seal(content.object_id, data_key, r, encapsulate) for r in recipients))
                if encapsulate is not None
                else ()
            )
            manifest = Manifest(
                content,
                tuple(
                    Placement(share, site.backend, site.failure_domain)
                    for share, site in placement.items()
                ),
                recipients=entries,
            )
            self._write_manifest(manifest)
        except BaseException:
            self._delete_shares(layout.object_nonce)
            raise
        return PutResult(manifest, tuple(spread_warnings(placement, k)))

    def _write_segment(
        self, segment: EncodedSegment, layout: ObjectLayout, placement: dict[int, Site]
    ) -> None:
        for share, block in enumerate(segment.blocks):
            key = share_key(layout.object_nonce, share, segment.index)
            self.backends[placement[share].backend].put(key, block)

    def _delete_shares(self, nonce: bytes) -> None:
        """Best effort: remove the shares of an object whose put failed."""
        for backend in self.backends.values():
            try:
                for key in list(backend.list(f"s/{nonce.hex()}/")):
                    backend.delete(key)
            except BackendError:
                continue

    def _sync(self, names: Iterable[str]) -> None:
        for name in sorted(set(names)):
            self.backends[name].sync()

    def _write_manifest(self, manifest: Manifest) -> None:
        """Commit: the shares are made durable first, then the manifest that names them."""
        self._sync(p.backend for p in manifest.placement if p.backend in self.backends)
        data = manifest.encode()
        key = manifest_key(manifest.object_id, manifest.version)
        durable = 0
        failures = []
        for backend_name in sorted({p.backend for p in manifest.placement}):
            backend = self.backends.get(backend_name)
            if backend is None:
                continue
            try:
                backend.put(key, data)
                backend.sync()
                durable += 1
            except BackendError as error:
                failures.append(f"{backend_name}: {error}")
        if durable == 0:
            raise BackendError(
                f"the manifest of {manifest.object_id[:16]} could not be stored durably "
                "anywhere: " + "; ".join(failures)
            )

    # -- manifests -------------------------------------------------------------------------------

    def find_manifest(self, object_id: str) -> Manifest:
        """The newest valid manifest of `object_id` on any backend."""
        versions: dict[int, list[Backend]] = {}
        refusals = []
        for backend in self.backends.values():
            try:
                keys = list(backend.list(f"m/{object_id}/"))
            except BackendError as error:
                refusals.append(f"{backend.name}: cannot list: {error}")
                continue
            for key in keys:
                suffix = key.rsplit("/", 1)[-1]
                if len(suffix) == 10 and suffix.isascii() and suffix.isdigit():
                    versions.setdefault(int(suffix), []).append(backend)
        for version in sorted(versions, reverse=True):
            for backend in versions[version]:
                try:
                    data = backend.get(manifest_key(object_id, version), MAX_MANIFEST_BYTES)
                    return decode(data, expected_id=object_id)
                except (ManifestError, BackendError) as error:
                    refusals.append(f"{backend.name} v{version}: {error}")
        detail = f" ({'; '.join(refusals)})" if refusals else ""
        raise ObjectNotFound(f"no backend holds a valid manifest of object {object_id}{detail}")

    def object_ids(self) -> Inventory:
        """The ids of every object some backend holds a manifest of, and the backends that
        could not be listed (with why)."""
        ids: set[str] = set()
        failed = []
        for backend in self.backends.values():
            try:
                ids.update(
                    parts[1]
                    for parts in (key.split("/") for key in backend.list("m/"))
                    if len(parts) == 3 and _OBJECT_ID.fullmatch(parts[1])
                )
            except BackendError as error:
                failed.append(BackendFailure(backend.name, str(error)))
        return Inventory(frozenset(ids), tuple(failed))

    def resolve(self, prefix: str) -> str:
        """The one object id that starts with `prefix` (8 or more hex digits)."""
        if len(prefix) > 64 or len(prefix) < 8 or any(c not in "0123456789abcdef" for c in prefix):
            raise ObjectNotFound(
                f"{prefix!r} is not an object id (64 hex digits, or 8+ to abbreviate)"
            )
        if len(prefix) == 64:
            return prefix
        inventory = self.object_ids()
        found = sorted(oid for oid in inventory.ids if oid.startswith(prefix))
        if len(found) != 1:
            what = "no object" if not found else f"{len(found)} objects"
            unlisted = "".join(
                f"; {failure.backend} could not be listed: {failure.reason}"
                for failure in inventory.failed
            )
            raise ObjectNotFound(f"{what} with an id starting {prefix}{unlisted}")
        return found[0]

    def list_objects(self) -> Listing:
        """The newest valid manifest of every object; the backends that could not be listed
        and the objects listed whose manifest could not be read, each with why."""
        inventory = self.object_ids()
        manifests = []
        unreadable = []
        for object_id in sorted(inventory.ids):
            try:
                manifests.append(self.find_manifest(object_id))
            except ObjectNotFound as error:
                unreadable.append((object_id, str(error)))
        return Listing(tuple(manifests), inventory.failed, tuple(unreadable))

    # -- get -------------------------------------------------------------------------------------

    def get(
        self,
        object_id: str,
        out: Path,
        *,
        storage_key: bytes | None = None,
        recipient: RecipientKey | None = None,
        progress: Progress | None = None,
    ) -> GetResult:
        """Write the object to `out` (atomically: all of it, verified, or nothing), opening its
        data key with the storage key or as `recipient` (`open_data_key`) before anything is
        fetched or written."""
        manifest = self.find_manifest(object_id)
        content = manifest.content
        data_key = open_data_key(manifest, storage_key=storage_key, recipient=recipient)
        codec = SegmentCodec(content.layout, data_key)
        problems: list[ShareProblem] = []
        try:
            with (
                atomic_writer(out, mode=0o600) as sink,
                ThreadPoolExecutor(self.workers, thread_name_prefix="qss-fetch") as io,
                ThreadPoolExecutor(self.workers, thread_name_prefix="qss-decode") as cpu,
            ):
                # Two stages, as for put: fetching (and hashing) the next segment's blocks
                # overlaps decoding and decrypting this one.
                fetches = (
                    partial(self._fetch_verified, manifest, index, problems, content.k)
                    for index in range(content.layout.segment_count)
                )
                decoded: deque[Future[bytes]] = deque()

                def write_oldest() -> None:
                    plaintext = decoded.popleft().result()
                    sink.write(plaintext)
                    if progress is not None:
                        progress(len(plaintext))

                for index, blocks in enumerate(self._pipeline(fetches, pool=io)):
                    decoded.append(cpu.submit(codec.decode, index, blocks))
                    while len(decoded) > 2 * self.workers:
                        write_oldest()
                while decoded:
                    write_oldest()
        except OSError as error:
            raise StorageError(f"{out}: cannot write: {error.strerror}") from None
        return GetResult(manifest, tuple(problems))

    def _candidates(self, manifest: Manifest) -> list[Placement]:
        """Shares in the order to ask for them: primary shares (cheapest to decode) first,
        then by how fast their backend has answered."""
        k = manifest.content.k
        with self._latency_lock:
            latency = dict(self._latency)
        return sorted(
            manifest.placement,
            key=lambda p: (p.share >= k, latency.get(p.backend, float("inf")), p.share),
        )

    def _search_elsewhere(
        self, manifest: Manifest, index: int, found: dict[int, bytes], needed: int
    ) -> dict[int, bytes]:
        """Blocks of segment `index` from backends the placement does not name for them.

        Placement is not covered by the object id, so a stale or forged manifest version may
        point at the wrong backends; the share hashes (which are covered) check whatever turns
        up. Only asked when the placement could not give k blocks.
        """
        expected = manifest.content.shares[index]
        limit = manifest.content.layout.block_length(index)
        named = {p.share: p.backend for p in manifest.placement}
        extra: dict[int, bytes] = {}
        for share in range(manifest.content.n):
            if len(found) + len(extra) >= needed:
                break
            if share in found:
                continue
            for backend in self.backends.values():
                if backend.name == named.get(share):
                    continue
                try:
                    block = backend.get(share_key(manifest, share, index), limit)
                except BackendError:
                    continue
                if share_hash(block) == expected[share]:
                    extra[share] = block
                    break
        return extra

    def _fetch_verified(
        self, manifest: Manifest, index: int, problems: list[ShareProblem], needed: int
    ) -> dict[int, bytes]:
        expected = manifest.content.shares[index]
        limit = manifest.content.layout.block_length(index)
        blocks: dict[int, bytes] = {}
        for placement in self._candidates(manifest):
            if len(blocks) == needed:
                break
            backend = self.backends.get(placement.backend)
            if backend is None:
                problems.append(
                    ShareProblem(
                        placement.share,
                        placement.backend,
                        index,
                        ShareStatus.UNREACHABLE,
                        "not configured",
                    )
                )
                continue
            try:
                block = self._timed_get(backend, share_key(manifest, placement.share, index), limit)
            except BlobNotFound:
                problems.append(
                    ShareProblem(placement.share, backend.name, index, ShareStatus.MISSING)
                )
                continue
            except InvalidBlob as error:
                problems.append(
                    ShareProblem(
                        placement.share, backend.name, index, ShareStatus.CORRUPT, str(error)
                    )
                )
                continue
            except BackendError as error:
                problems.append(
                    ShareProblem(
                        placement.share, backend.name, index, ShareStatus.UNREACHABLE, str(error)
                    )
                )
                continue
            if share_hash(block) != expected[placement.share]:
                problems.append(
                    ShareProblem(placement.share, backend.name, index, ShareStatus.CORRUPT)
                )
                continue
            blocks[placement.share] = block
        if len(blocks) < needed:
            blocks.update(self._search_elsewhere(manifest, index, blocks, needed))
        if len(blocks) < needed:
            failed = sorted(
                {(p.share, p.backend, p.status.value) for p in problems if p.segment == index}
            )
            named = ", ".join(
                f"share {share} on {backend} ({status})" for share, backend, status in failed
            )
            raise NotEnoughShares(
                f"object {manifest.object_id[:16]} segment {index}: {len(blocks)} of the "
                f"{needed} shares needed could be read; lost: {named or 'none named'}"
            )
        return blocks

    # -- scrub and repair ------------------------------------------------------------------------

    def scrub(self, object_id: str) -> ObjectHealth:
        """Read and hash-check every block of every share of the object."""
        manifest = self.find_manifest(object_id)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="qss-scrub") as pool:
            shares = list(pool.map(lambda p: self._check_share(manifest, p), manifest.placement))
        return ObjectHealth(manifest, tuple(sorted(shares, key=lambda s: s.share)))

    def _check_share(self, manifest: Manifest, placement: Placement) -> ShareHealth:
        backend = self.backends.get(placement.backend)
        status = ShareStatus.HEALTHY
        bad: list[int] = []
        if backend is None:
            return ShareHealth(
                placement.share,
                placement.backend,
                placement.failure_domain,
                ShareStatus.UNREACHABLE,
            )
        layout = manifest.content.layout
        for index, expected in enumerate(manifest.content.shares):
            try:
                key = share_key(manifest, placement.share, index)
                block = backend.get(key, layout.block_length(index))
                found = (
                    ShareStatus.HEALTHY
                    if share_hash(block) == expected[placement.share]
                    else ShareStatus.CORRUPT
                )
            except BlobNotFound:
                found = ShareStatus.MISSING
            except InvalidBlob:
                found = ShareStatus.CORRUPT
            except BackendError:
                return ShareHealth(
                    placement.share,
                    placement.backend,
                    placement.failure_domain,
                    ShareStatus.UNREACHABLE,
                )
            if found is not ShareStatus.HEALTHY:
                bad.append(index)
                status = max(status, found, key=SEVERITY.index)
        return ShareHealth(
            placement.share, placement.backend, placement.failure_domain, status, tuple(bad)
        )

    def repair(
        self,
        object_id: str,
        health: ObjectHealth | None = None,
        *,
        progress: Progress | None = None,
    ) -> RepairResult:
        """Re-create every share that is not healthy from any k healthy ones, without the data
        key, on backends that hold no share of the object yet (or in place when none is left),
        and commit a new manifest version. Safe to run again after an interruption."""
        health = health or self.scrub(object_id)
        manifest = health.manifest
        lost = health.lost
        if not lost:
            return RepairResult(health, manifest)
        content = manifest.content
        unreachable = {s.backend for s in health.shares if s.status is ShareStatus.UNREACHABLE}
        available = [site for site in self.sites() if site.backend not in unreachable]
        current = {p.share: Site(p.backend, p.failure_domain) for p in manifest.placement}
        targets = replacements(current, lost, available)
        codec = SegmentCodec(content.layout, None)

        def rebuild(index: int) -> int:
            problems: list[ShareProblem] = []
            # Every share may serve: a share lost in one segment is good in the others, and a
            # bad block fails its hash and is skipped.
            blocks = self._fetch_verified(manifest, index, problems, content.k)
            rebuilt = codec.rebuild(index, blocks, sorted(targets))
            for share, block in zip(sorted(targets), rebuilt, strict=True):
                if share_hash(block) != content.shares[index][share]:
                    raise IntegrityError(
                        f"segment {index}: rebuilt share {share} does not match its hash"
                    )
                self.backends[targets[share].backend].put(share_key(manifest, share, index), block)
            if progress is not None:
                progress(content.layout.plain_length(index))
            return index

        with ThreadPoolExecutor(self.workers, thread_name_prefix="qss-repair") as pool:
            tasks = (partial(rebuild, index) for index in range(content.layout.segment_count))
            for _ in self._pipeline(tasks, pool=pool):
                pass
        sites = {share: targets.get(share, current[share]) for share in range(content.n)}
        moved = manifest.moved(
            tuple(Placement(share, s.backend, s.failure_domain) for share, s in sites.items())
        )
        self._write_manifest(moved)
        # Shares moved away from a backend that still answers are stale copies now.
        for share, site in targets.items():
            old = current[share]
            if (
                old.backend != site.backend
                and old.backend in self.backends
                and old.backend not in unreachable
            ):
                for index in range(content.layout.segment_count):
                    try:
                        self.backends[old.backend].delete(share_key(manifest, share, index))
                    except BackendError:
                        break
        return RepairResult(health, moved, targets)

    # -- share and unshare -----------------------------------------------------------------------

    def share(
        self,
        object_id: str,
        *,
        storage_key: bytes,
        recipients: Sequence[Recipient],
        encapsulate: Encapsulate,
    ) -> ShareResult:
        """Share the object with `recipients` (an entry of a name already there is replaced):
        its data key is opened with the storage key, wrapped for each, and written as a new
        manifest version. Refused, with nothing written, for an object without a key
        commitment (stored before recipients existed)."""
        if not recipients:
            raise InvalidParameters("no recipient to share with")
        _check_recipients(recipients, encapsulate)
        manifest = self.find_manifest(object_id)
        if manifest.content.key_commitment is None:
            raise RecipientError(
                f"object {object_id[:16]} was stored before key commitments, so an entry could "
                "not be checked by its readers: store it again (circle qss put) to share it"
            )
        data_key = open_data_key(manifest, storage_key=storage_key)
        added = [seal(manifest.object_id, data_key, r, encapsulate) for r in recipients]
        shared = manifest.shared(merged(manifest.recipients, added))
        self._write_manifest(shared)
        return ShareResult(shared)

    def unshare(self, object_id: str, names: Sequence[str]) -> ShareResult:
        """Remove the entries of `names` (each must be there): a new manifest version without
        them, then every older version deleted from every backend, since those still hold
        the entries; the backends that failed are named (run it again once they are back).
        Needs no key. A recipient that read the object before may have kept its data key:
        to revoke that too, store the object again and remove this one."""
        if not names:
            raise InvalidParameters("no recipient to unshare")
        manifest = self.find_manifest(object_id)
        present = {entry.name for entry in manifest.recipients}
        missing = sorted(set(names) - present)
        if missing:
            raise RecipientError(
                f"object {object_id[:16]} is not shared with {', '.join(missing)} (shared "
                f"with {', '.join(sorted(present)) or 'no one'}); nothing was changed"
            )
        kept = tuple(entry for entry in manifest.recipients if entry.name not in set(names))
        shared = manifest.shared(kept)
        self._write_manifest(shared)
        return ShareResult(shared, tuple(self._drop_versions_before(shared)))

    def _drop_versions_before(self, manifest: Manifest) -> Iterator[BackendFailure]:
        for backend in self.backends.values():
            try:
                for key in list(backend.list(f"m/{manifest.object_id}/")):
                    suffix = key.rsplit("/", 1)[-1]
                    if suffix.isascii() and suffix.isdigit() and int(suffix) < manifest.version:
                        backend.delete(key)
            except BackendError as error:
                yield BackendFailure(backend.name, str(error))

    # -- remove ----------------------------------------------------------------------------------

    def remove(self, object_id: str) -> RemoveResult:
        """Delete every share and manifest of the object from every backend; the backends that
        failed (which may still hold some of it: run it again once they are back) with why."""
        manifest = self.find_manifest(object_id)
        failed = []
        for backend in self.backends.values():
            try:
                for key in list(backend.list(f"s/{manifest.content.object_nonce.hex()}/")):
                    backend.delete(key)
                # The manifests go last: while one is left, the object can be found again.
                for key in list(backend.list(f"m/{object_id}/")):
                    backend.delete(key)
            except BackendError as error:
                failed.append(BackendFailure(backend.name, str(error)))
        return RemoveResult(manifest, tuple(failed))


def _check_recipients(recipients: Sequence[Recipient], encapsulate: Encapsulate | None) -> None:
    names = [recipient.name for recipient in recipients]
    if len(set(names)) != len(names):
        raise InvalidParameters(f"a recipient is named twice: {sorted(names)}")
    if recipients and encapsulate is None:
        raise InvalidParameters("recipients need the X-Wing KEM to wrap the data key for them")
