"""Numbers as people read them in tables and pages (kubectl's habits): ages and byte sizes.
Pure; beside `errors.py` and `files.py`, so the CLI and the dashboard share one spelling."""

from __future__ import annotations


def age(seconds: float) -> str:
    """kubectl's ages: 42s, 5m, 3h, 12d."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size or (unit == "m" and seconds >= size):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def size(count: int) -> str:
    """Binary units, one decimal where it says something: 256Mi, 23.5Gi, 512."""
    for unit, scale in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}".replace(".0", "")
    return str(count)
