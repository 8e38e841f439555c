"""The unprivileged uid each workload runs as on this node, allocated once and recorded.

A workload keeps its uid for as long as the node's folder lives (its work folders stay its
own across restarts and versions). Uids come from the agent's range (`--uids`, default
420000-429999; give each agent on one machine its own range) and skip any uid the host's user
database knows or a running process uses, so a workload never shares a uid with anything else.

The table (`uids.json`, 0600) is written atomically:

    {"format": "circle-uids/1", "workloads": {"langid": 420000, ...}}
"""

from __future__ import annotations

import json
import pwd
import threading
from pathlib import Path

import psutil

from qss.durable import write_atomically
from reconciler.errors import InputError, ReconcilerError
from reconciler.files import read_bounded

FORMAT = "circle-uids/1"
DEFAULT_RANGE = (420_000, 429_999)
_MAX_TABLE = 4 << 20


class UidError(ReconcilerError):
    """No uid can be given: the range is used up, or the table cannot be read or written."""


def parse_range(text: str) -> tuple[int, int]:
    """`START-END` (inclusive), well above the host's users and below 2^31."""
    start, dash, end = text.partition("-")
    if not dash or not start.isdigit() or not end.isdigit():
        raise InputError(f"--uids {text!r}: expected START-END, e.g. 420000-429999")
    low, high = int(start), int(end)
    if not 65536 <= low <= high < 2**31 - 1:
        raise InputError(f"--uids {text!r}: expected 65536 <= START <= END < 2147483647")
    return low, high


class UidTable:
    """uid per workload name (see the module). Thread-safe."""

    def __init__(self, path: Path, uid_range: tuple[int, int] = DEFAULT_RANGE) -> None:
        self.path = path
        self.range = uid_range
        self._lock = threading.Lock()
        self._table = self._load()

    def uid_of(self, workload: str) -> int:
        """The workload's uid; allocated (and recorded) on first use."""
        with self._lock:
            found = self._table.get(workload)
            if found is not None:
                return found
            uid = self._free()
            self._table[workload] = uid
            self._save()
            return uid

    def known(self) -> dict[str, int]:
        with self._lock:
            return dict(self._table)

    def _free(self) -> int:
        taken = set(self._table.values())
        running = {p.info["uids"].real for p in psutil.process_iter(["uids"]) if p.info["uids"]}
        low, high = self.range
        for uid in range(low, high + 1):
            if uid in taken or uid in running:
                continue
            try:
                pwd.getpwuid(uid)
            except KeyError:
                return uid
        raise UidError(f"no free uid left in {low}-{high} ({len(taken)} workloads hold one)")

    def _load(self) -> dict[str, int]:
        if not self.path.exists():
            return {}
        data = read_bounded(self.path, _MAX_TABLE)
        try:
            document = json.loads(data)
            workloads = document["workloads"]
            if document.get("format") != FORMAT or not isinstance(workloads, dict):
                raise ValueError("format")
            table = {str(name): uid for name, uid in workloads.items()}
            if any(type(uid) is not int or uid < 65536 for uid in table.values()):
                raise ValueError("uid")
        except (ValueError, KeyError, TypeError):
            raise UidError(f"{self.path}: not a uid table ({FORMAT})") from None
        return table

    def _save(self) -> None:
        document = {"format": FORMAT, "workloads": dict(sorted(self._table.items()))}
        try:
            write_atomically(self.path, json.dumps(document, indent=2) + "\n", mode=0o600)
        except OSError as error:
            raise UidError(f"{self.path}: cannot record the uids: {error.strerror}") from error
