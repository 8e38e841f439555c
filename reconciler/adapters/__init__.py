"""Imperative shell of the reconciler: files, Git, processes. Adapters feed the pure core."""
