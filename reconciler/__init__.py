"""Autonomous Circles reconciler: Human Chain verification, desired-state model, planning and
the `circle` command.

The package is layered: `reconciler.model` and `reconciler.core` are pure (values in, values or
exceptions out, no I/O, no clock); `reconciler.adapters` talks to files, Git and processes;
`reconciler.cli` is the command line. `docs/architecture.md` draws the picture.
"""

__version__ = "0.1.0"
