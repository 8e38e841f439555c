"""Sealing a value for the circle's nodes, opening it on one, and deciding whether a node may
release it. Pure: values in, values or a refusal out; no files, no clock.

    binding      = RFC 8785 JSON {"circle", "digests" (sorted), "format": "circle-secret/1",
                                  "secret", "workloads" (sorted)}
    data key     = 32 random bytes, fresh for every seal
    ciphertext   = AES-256-GCM(data key, nonce (12 random bytes), value, aad = binding)
    per node N:  (ss, encapsulation) = X-Wing.Encapsulate(N's kemPublicKey)
                 wrappedKey = AES-256-GCM(ss, nonce = 12 zero bytes, data key,
                                          aad = RFC 8785 JSON {"binding": {...as above},
                                          "format": "circle-secret-recipient/1",
                                          "kemKey": sha256 of N's key, "node": N})

Every shared secret wraps exactly one key, so its fixed nonce is never reused. Changing any
byte of the binding (another workload, circle, name or digest), of the ciphertext, of a
recipient's encapsulation, wrapped key, node or kemKey, or moving a recipient between
secrets, makes one of the two AES-GCM tags fail: `SealBroken`, and no byte of the value.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import rfc8785
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from reconciler.desired.model.secret import (
    ALGORITHM,
    MAX_VALUE_BYTES,
    NONCE_BYTES,
    Recipient,
    Secret,
)
from reconciler.secrets import xwing
from reconciler.secrets.errors import (
    NotARecipient,
    NotReleased,
    SealBroken,
    SecretError,
    WrongRecipient,
)

FORMAT = "circle-secret/1"
RECIPIENT_FORMAT = "circle-secret-recipient/1"
_WRAP_NONCE = bytes(NONCE_BYTES)


@dataclass(frozen=True, slots=True)
class Binding:
    """What a sealed value is bound to: authenticated with it, never secret."""

    circle: str
    secret: str
    workloads: tuple[str, ...]
    digests: tuple[str, ...] = ()

    @classmethod
    def of(cls, secret: Secret) -> Binding:
        return cls(secret.circle, secret.name, tuple(secret.workloads), tuple(secret.digests))

    def _json(self) -> dict[str, str | list[str]]:
        return {
            "format": FORMAT,
            "circle": self.circle,
            "secret": self.secret,
            "workloads": sorted(set(self.workloads)),
            "digests": sorted(set(self.digests)),
        }

    def aad(self) -> bytes:
        return rfc8785.dumps(self._json())

    def recipient_aad(self, node: str, kem_key: str) -> bytes:
        return rfc8785.dumps(
            {"format": RECIPIENT_FORMAT, "binding": self._json(), "node": node, "kemKey": kem_key}
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def seal(
    value: bytes,
    binding: Binding,
    recipients: Mapping[str, str],
    description: str | None = None,
) -> Secret:
    """The Secret document of `value` bound to `binding`, its data key sealed to each of
    `recipients` (node name -> its `x-wing ...` key line). SecretError for an empty or too
    large value, no recipient, or a key that is not X-Wing's (naming the node)."""
    if not value:
        raise SecretError("refusing to seal an empty value")
    if len(value) > MAX_VALUE_BYTES:
        raise SecretError(f"a secret holds at most {MAX_VALUE_BYTES} bytes, found {len(value)}")
    if not recipients:
        raise SecretError("no node to seal it to")
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = secrets.token_bytes(NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, value, binding.aad())
    sealed: list[Recipient] = []
    for node, line in sorted(recipients.items()):
        try:
            public = xwing.parse_public_key(line)
            shared, encapsulation = xwing.encapsulate(public)
        except SecretError as error:
            raise type(error)(f"node {node}: {error}") from None
        kem_key = xwing.fingerprint(public)
        wrapped = AESGCM(shared).encrypt(
            _WRAP_NONCE, data_key, binding.recipient_aad(node, kem_key)
        )
        sealed.append(
            Recipient(
                node=node,
                kem_key=kem_key,
                encapsulation=_b64(encapsulation),
                wrapped_key=_b64(wrapped),
            )
        )
    return Secret.model_validate(
        {
            "apiVersion": "circle/v1",
            "kind": "Secret",
            "name": binding.secret,
            "description": description,
            "circle": binding.circle,
            "workloads": sorted(set(binding.workloads)),
            "digests": sorted(set(binding.digests)),
            "algorithm": ALGORITHM,
            "nonce": _b64(nonce),
            "ciphertext": _b64(ciphertext),
            "recipients": [r.model_dump(by_alias=True) for r in sealed],
        }
    )


def open_secret(secret: Secret, node: str, key: xwing.XWingPrivateKey) -> bytes:
    """The value, for `node` holding `key`. NotARecipient, WrongRecipient (sealed to another
    key of this node), SealBroken (a changed byte anywhere), or KemError."""
    recipient = next((r for r in secret.recipients if r.node == node), None)
    if recipient is None:
        sealed_to = ", ".join(r.node for r in secret.recipients)
        raise NotARecipient(
            f"secret {secret.name} is not sealed to node {node} (sealed to {sealed_to}): "
            f"the owners reseal it (circle secret reseal {secret.name})"
        )
    mine = xwing.fingerprint(key.public_bytes)
    if recipient.kem_key != mine:
        raise WrongRecipient(
            f"secret {secret.name}: node {node}'s copy is sealed to KEM key "
            f"{recipient.kem_key}, and this node holds {mine} (circle secret reseal "
            f"{secret.name})"
        )
    binding = Binding.of(secret)
    shared = xwing.decapsulate(key, base64.b64decode(recipient.encapsulation))
    try:
        data_key = AESGCM(shared).decrypt(
            _WRAP_NONCE,
            base64.b64decode(recipient.wrapped_key),
            binding.recipient_aad(node, recipient.kem_key),
        )
    except InvalidTag:
        raise SealBroken(
            f"secret {secret.name}: node {node}'s sealed copy of the data key does not "
            "authenticate: its encapsulation, wrapped key or the binding (circle, name, "
            "workloads, digests) changed after sealing"
        ) from None
    try:
        return AESGCM(data_key).decrypt(
            base64.b64decode(secret.nonce), base64.b64decode(secret.ciphertext), binding.aad()
        )
    except InvalidTag:
        raise SealBroken(
            f"secret {secret.name}: the ciphertext does not authenticate under its binding: "
            "the ciphertext, nonce, circle, name, workloads or digests changed after sealing"
        ) from None


def check_release(secret: Secret, circle: str, workload: str, digest: str) -> None:
    """NotReleased unless `secret` may go to a replica of `workload` running the artifact
    `digest` in circle `circle` (the applied commit's); the AEAD checks the same binding again
    when the value is opened."""
    if secret.circle != circle:
        raise NotReleased(
            f"secret {secret.name} is bound to circle {secret.circle!r}, not {circle!r}"
        )
    if workload not in secret.workloads:
        raise NotReleased(
            f"secret {secret.name} is bound to workloads {', '.join(secret.workloads)}, not "
            f"{workload}"
        )
    if secret.digests and digest not in secret.digests:
        raise NotReleased(
            f"secret {secret.name} is bound to artifacts {', '.join(secret.digests)}; workload "
            f"{workload} runs {digest}"
        )


# -- the document as text -------------------------------------------------------------------


def _flow(items: Iterable[str]) -> str:
    return "[" + ", ".join(items) + "]"


def render(secret: Secret, header: Sequence[str] = ()) -> str:
    """The YAML text of a sealed secret: every value is a name, digest or base64, so plain
    scalars are exact; the description, free text, is written as a JSON (YAML) string."""
    lines = [f"# {line}" if line else "#" for line in header]
    lines += [
        "apiVersion: circle/v1",
        "kind: Secret",
        f"name: {secret.name}",
    ]
    if secret.description is not None:
        lines.append(f"description: {json.dumps(secret.description)}")
    lines += [f"circle: {secret.circle}", f"workloads: {_flow(secret.workloads)}"]
    if secret.digests:
        lines.append(f"digests: {_flow(json.dumps(digest) for digest in secret.digests)}")
    lines += [
        f"algorithm: {secret.algorithm}",
        f"nonce: {secret.nonce}",
        f"ciphertext: {secret.ciphertext}",
        "recipients:",
    ]
    for recipient in secret.recipients:
        lines += [
            f"  - node: {recipient.node}",
            f"    kemKey: {recipient.kem_key}",
            f"    encapsulation: {recipient.encapsulation}",
            f"    wrappedKey: {recipient.wrapped_key}",
        ]
    return "\n".join(lines) + "\n"


def release(
    secret: Secret,
    *,
    circle: str,
    workload: str,
    digest: str,
    node: str,
    key: xwing.XWingPrivateKey,
) -> bytes:
    """What a node hands a replica it starts: the value, only when `secret` is bound to this
    circle, `workload` and the artifact `digest` it runs (`check_release`) and sealed to
    `node`'s `key` (`open_secret`). The binding is checked before any decryption."""
    check_release(secret, circle, workload, digest)
    return open_secret(secret, node, key)
