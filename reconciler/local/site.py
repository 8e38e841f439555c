"""The folder a local circle lives in, and what `circle up` recorded there.

    DIR/up.json              the record: circle id, where it came from, nodes, options
    DIR/circle/              the owners' repository (the nodes' SOURCE)
    DIR/intro.json           the introduction the nodes pin
    DIR/keys/owners/NAME     demo owners' keys (NAME.pub beside each)
    DIR/keys/owners/S.secret the value of secret S (0600), which the owners hold: the nodes
                             have it only sealed, in secrets/S.yaml
    DIR/keys/nodes/NAME      node keys (NAME.x-wing beside each: the KEM key secrets open with)
    DIR/storage.key          the circle's QSS storage key
    DIR/chunks/              the builds' artifacts (the nodes' artifact source)
    DIR/qss/BACKEND/         one folder per volume backend
    DIR/state.db             the SQLite state store
    DIR/nodes/NAME/          each node agent's own folder (`circle node run --state`)
    DIR/run/NAME.pid         each agent's pid and start time; DIR/logs/NAME.log its log

A folder without `up.json` but with `.making` is a circle whose making was interrupted: it is
made again from the start. Every command that changes DIR holds `DIR/.lock` (flock), so two
`circle up` never race.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qss.durable import write_atomically
from reconciler.errors import InputError
from reconciler.files import read_bounded

RECORD = "up.json"
FORMAT = "circle-up/1"
MAKING = ".making"
_MAX_RECORD = 1 << 20


def default_dir() -> Path:
    """The per-user data folder: $XDG_DATA_HOME/circle/up, else ~/.local/share/circle/up."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "circle" / "up"


@dataclass(frozen=True)
class Record:
    """What `circle up` made in DIR (`up.json`)."""

    circle: str  # the circle's id
    source: str  # the repository it was made from
    nodes: tuple[str, ...]
    owners: tuple[str, ...]
    ttl: int
    uid_base: int  # the first uid of node 0's range (one range of UIDS_PER_NODE per node)
    cgroup_parent: str
    cgroup_bases: tuple[str, ...]  # where the replicas' groups are, for `circle down`
    created_at: int
    progress_deadline: float = 600.0  # seconds before a waiting rolling update is Stalled
    scrub_interval: float = 30.0  # seconds between the leader's scrubs of the volumes
    secrets: tuple[str, ...] = ()  # the secrets sealed anew, whose values DIR holds

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "circle": self.circle,
            "source": self.source,
            "nodes": list(self.nodes),
            "owners": list(self.owners),
            "ttl": self.ttl,
            "uidBase": self.uid_base,
            "cgroupParent": self.cgroup_parent,
            "cgroupBases": list(self.cgroup_bases),
            "createdAt": self.created_at,
            "progressDeadline": self.progress_deadline,
            "scrubInterval": self.scrub_interval,
            "secrets": list(self.secrets),
        }


@dataclass(frozen=True)
class Site:
    root: Path

    @property
    def record_file(self) -> Path:
        return self.root / RECORD

    @property
    def repo(self) -> Path:
        return self.root / "circle"

    @property
    def intro(self) -> Path:
        return self.root / "intro.json"

    @property
    def storage_key(self) -> Path:
        return self.root / "storage.key"

    @property
    def chunks(self) -> Path:
        return self.root / "chunks"

    @property
    def qss(self) -> Path:
        return self.root / "qss"

    @property
    def store_url(self) -> str:
        return f"sqlite:{self.root / 'state.db'}"

    def owner_key(self, name: str) -> Path:
        return self.root / "keys" / "owners" / name

    def secret_value(self, name: str) -> Path:
        """Where the owners' copy of secret `name`'s value is (names have no '.', so it never
        meets an owner's NAME or NAME.pub)."""
        return self.root / "keys" / "owners" / f"{name}.secret"

    def node_key(self, name: str) -> Path:
        return self.root / "keys" / "nodes" / name

    def node_dir(self, name: str) -> Path:
        return self.root / "nodes" / name

    def pid_file(self, name: str) -> Path:
        return self.root / "run" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def interrupted(self) -> bool:
        """A making that did not finish left this folder behind."""
        return (self.root / MAKING).exists() and not self.record_file.exists()

    def read_record(self) -> Record | None:
        """The record, or None when DIR holds no circle; a damaged record is refused."""
        if not os.path.lexists(self.record_file):
            return None
        data = read_bounded(self.record_file, _MAX_RECORD)
        try:
            if len(data) > _MAX_RECORD:
                raise ValueError(f"over {_MAX_RECORD} bytes")
            found = json.loads(data)
            if found.get("format") != FORMAT:
                raise ValueError(f"format {found.get('format')!r}, expected {FORMAT!r}")
            return Record(
                circle=_text(found["circle"]),
                source=_text(found["source"]),
                nodes=tuple(_text(n) for n in found["nodes"]),
                owners=tuple(_text(n) for n in found["owners"]),
                ttl=int(found["ttl"]),
                uid_base=int(found["uidBase"]),
                cgroup_parent=_text(found["cgroupParent"]),
                cgroup_bases=tuple(_text(b) for b in found["cgroupBases"]),
                created_at=int(found["createdAt"]),
                progress_deadline=float(found.get("progressDeadline", 600.0)),
                scrub_interval=float(found.get("scrubInterval", 30.0)),
                secrets=tuple(_text(n) for n in found.get("secrets", [])),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise InputError(
                f"{self.record_file}: not a record of circle up ({error}); "
                "`circle down --purge` removes this folder"
            ) from None

    def write_record(self, record: Record) -> None:
        write_atomically(self.record_file, json.dumps(record.to_json(), indent=2) + "\n")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold DIR/.lock; another `circle up` or `down` on DIR is refused at once."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InputError(
                    f"{self.root}: another `circle up` or `circle down` is working on it"
                ) from None
            yield
        finally:
            os.close(fd)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value
