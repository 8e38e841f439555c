"""When to restart a replica that ended: the crash-loop backoff (pure; it is told the time).

A replica that ends is started again, however it ended (the restart policy is Always, as for a
Kubernetes Deployment). The first restart after a stretch of health is immediate: one crash is
an incident, and the service should be back at once. Each further crash in a row doubles the
wait, from 1 s up to 5 minutes, and the replica is in CrashLoopBackOff meanwhile. Ten minutes
of running without a crash (and, with a health check, Ready) forgive every earlier crash.
"""

from __future__ import annotations

from dataclasses import dataclass

FIRST_DELAY = 1.0
MAX_DELAY = 300.0
RESET_AFTER = 600.0


def delay_after(crashes: int) -> float:
    """The wait before the restart that follows the `crashes`-th crash in a row."""
    if crashes <= 1:
        return 0.0
    return min(MAX_DELAY, FIRST_DELAY * 2.0 ** (crashes - 2))


@dataclass
class CrashLoop:
    """One replica's crashes in a row, and when it may start again."""

    crashes: int = 0
    restarts: int = 0  # every start after the first, for status (Kubernetes' restartCount)
    not_before: float = 0.0
    healthy_since: float | None = None

    def started(self, now: float, *, first: bool) -> None:
        if not first:
            self.restarts += 1
        self.healthy_since = now

    def healthy(self, now: float) -> None:
        """The replica runs (and is Ready, when it has a check): ten minutes of this reset."""
        if self.healthy_since is None:
            self.healthy_since = now
        if self.crashes and now - self.healthy_since >= RESET_AFTER:
            self.crashes = 0

    def unwell(self) -> None:
        """Not Ready: the time towards forgiveness starts again."""
        self.healthy_since = None

    def ended(self, now: float) -> float:
        """The replica ended at `now`: returns the wait before it starts again."""
        if self.healthy_since is not None and now - self.healthy_since >= RESET_AFTER:
            self.crashes = 0
        self.crashes += 1
        self.healthy_since = None
        wait = delay_after(self.crashes)
        self.not_before = now + wait
        return wait

    def due(self, now: float) -> bool:
        return now >= self.not_before

    @property
    def looping(self) -> bool:
        """Waiting out a backoff after more than one crash in a row."""
        return self.crashes > 1
