"""Sealed secrets: values encrypted in Git for the circle's nodes, released by a node only to
the replicas of the workloads (and artifacts) they are bound to.

    xwing    the X-Wing hybrid KEM (X25519 + ML-KEM-768, draft-connolly-cfrg-xwing-kem-08)
             from `cryptography` primitives: keys, encapsulation, decapsulation (pure)
    seal     a secret's binding, sealing a value for recipients and opening it (pure)
    keys     a node's X-Wing key files beside its node key (shell)

Errors, all `SecretError(CheckFailed)` unless said otherwise:

    SecretError
    ├── KemError          a key, encapsulation or key line that is not X-Wing's
    ├── NotARecipient     the secret holds no sealed copy of the data key for this node
    ├── WrongRecipient    the sealed copy is for another KEM key of this node (rotated)
    ├── SealBroken        a ciphertext, binding or wrapped key that does not authenticate
    └── NotReleased       the node may not release it here: workload or digest not bound
    KemKeyError(InputError)  a key file that cannot be made or read
"""
