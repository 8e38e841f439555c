"""Deterministic builds: pinned inputs in, a canonical artifact manifest and content-addressed
chunks out (DESIGN.md section 5). Imports `qss`, never `reconciler`.

Errors raised here derive from `BuildError`:

    BuildError
    ├── ManifestRefused       builders.manifest: a malformed or unsafe manifest, or not its id's
    ├── ChunkError            builders.chunks: ChunkMissing, ChunkCorrupt
    ├── SignatureError        builders.sshsig: an SSHSIG that does not verify
    ├── ProvenanceError       builders.provenance: too few trusted builders agree
    └── MaterializeError      builders.faults, raised by builders.materialize and its helpers
                              (assemble, swarm); ChunkUnavailable, TreeMismatch
"""


class BuildError(Exception):
    """Base of every error this package raises."""
