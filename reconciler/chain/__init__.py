"""The Human Chain: approval statements, changed paths, quorum and the one `verify` module
that decides every ordering, rollback and equivocation rule (pure); then the shell that feeds
it: Git trees, the approvals ref, the walk, `follow`, the node's trust state, sigstore.
"""
