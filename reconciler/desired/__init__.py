"""The repository as desired state: strict YAML, the document models, per-document and
cross-document checks, admission, presets, schemas and review in desired-state terms (pure),
plus the adapters that read a working folder, shipped data and write build locks.
"""
