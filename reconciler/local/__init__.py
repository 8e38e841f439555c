"""A whole circle on one machine (`circle up`): demo owners and nodes with keys of their own, a
Git repository whose genesis the owners approve by the policy's own quorum, the builds, the
volumes' objects in local Quantum Safe Storage folders, a SQLite state store, and one real,
detached node agent per node.

    site.py     the folder a local circle lives in (DIR), what it records, its lock
    make.py     making the circle in DIR, step by step, from a circle repository
    agents.py   the node agents as detached processes: start, find, stop
    progress.py what the circle does now, read from the store (convergence, endpoints)
"""
