"""Autonomous Circles reconciler: Human Chain verification, desired-state model, planning and
the `circle` command.

The package is folded by concern: `reconciler.desired` (the repository as desired state) and
`reconciler.chain` (the Human Chain), each a pure core (values in, values or exceptions out,
no I/O, no clock) and the shell that feeds it; `reconciler.cli` is the command line.
`docs/architecture.md` draws the picture.
"""

__version__ = "0.1.0"
