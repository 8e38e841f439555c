"""Waking the agent when its SOURCE changes, so that an approval filed in a repository on this
machine is followed at once rather than at the next fetch.

For a SOURCE that is a local path, a thread watches the repository's refs (watchfiles, inotify
on Linux): a commit on main, a filed approval (the approvals ref) or a push into it changes a
ref, and `on_change` is called. Nothing is read from the event: it only says "fetch now", and
the fetch verifies everything as any fetch does, so a flood of changes costs one fetch per
wake-up and can never make the agent trust anything. A remote SOURCE is polled every fetch
interval, as before; a watch that fails (inotify limits) says so and falls back to polling.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import watchfiles

_DEBOUNCE_MS = 30  # one wake-up for a ref update's several file events
_STEP_MS = 50  # how often the watcher looks for changes (watchfiles' default)


def local_refs(source: str) -> Path | None:
    """The folder holding the refs of a local SOURCE (a working copy's .git, or a bare
    repository), or None for a remote one."""
    parts = urlsplit(source)
    if parts.scheme not in ("", "file") or (parts.scheme == "" and ":" in source.split("/")[0]):
        return None  # https://, ssh://, and scp-like host:path
    root = Path(parts.path if parts.scheme == "file" else source)
    for candidate in (root / ".git", root):
        if (candidate / "refs").is_dir():
            return candidate
    return None


class SourceWatch:
    """Calls `on_change` from its own thread whenever a ref of the repository changes."""

    def __init__(
        self, folder: Path, on_change: Callable[[], None], say: Callable[[str], None]
    ) -> None:
        self.folder = folder
        self.on_change = on_change
        self.say = say
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="source-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            for _ in watchfiles.watch(
                self.folder,
                watch_filter=_is_ref,
                debounce=_DEBOUNCE_MS,
                step=_STEP_MS,
                stop_event=self._stop,
                raise_interrupt=False,
            ):
                self.on_change()
        except (OSError, RuntimeError) as error:
            self.say(f"source watch on {self.folder}: {error}; fetching every interval instead")


def _is_ref(change: watchfiles.Change, path: str) -> bool:
    """A ref moved: loose refs, packed-refs, HEAD (not objects, not index, not lock files)."""
    if path.endswith(".lock"):
        return False
    return "/refs/" in path or path.endswith(("/packed-refs", "/HEAD"))
