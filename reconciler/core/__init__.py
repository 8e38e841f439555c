"""Pure core of the reconciler: parsing, validation and checks over bytes and values.

Nothing in here touches the filesystem, the network, processes or the clock; adapters feed it.
"""
