"""Sealed secrets as values: sealing for nodes, opening on one, and every refusal with its own
error: a node not among the recipients, a rotated key, a changed byte of the ciphertext, of the
binding or of a recipient, a recipient moved between secrets, a release to another workload,
artifact or circle; documents that are not a secret; a repository whose secrets do not fit."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.desired.documents import parse_document
from reconciler.desired.folder import check_circle_dir
from reconciler.desired.model import KINDS, Secret
from reconciler.desired.problems import DocumentError
from reconciler.secrets import seal, xwing
from reconciler.secrets.errors import (
    NotARecipient,
    NotReleased,
    SealBroken,
    SecretError,
    WrongRecipient,
)
from tests.conftest import copy_example, without_secrets

VALUE = b"sk-live-7f3a9c-a-value-no-test-output-may-show"
DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32
KEYS = {name: xwing.generate() for name in ("node-a", "node-b")}
BINDING = seal.Binding("example-ai-circle", "api-key", ("langid",), (DIGEST,))


def sealed(binding: seal.Binding = BINDING) -> Secret:
    lines = {name: key.public_key_line(name) for name, key in KEYS.items()}
    return seal.seal(VALUE, binding, lines)


def changed(secret: Secret, **fields: object) -> Secret:
    data = secret.model_dump(by_alias=True)
    data.update(fields)
    return Secret.model_validate(data)


def flip(text: str, index: int = 0) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_every_recipient_opens_it_and_the_document_round_trips_as_text() -> None:
    secret = sealed()
    for name, key in KEYS.items():
        assert seal.open_secret(secret, name, key) == VALUE
    text = seal.render(secret, ["a header"])
    assert VALUE.decode() not in text
    loaded = parse_document(text.encode(), "secrets/api-key.yaml", [KINDS["Secret"]])
    assert loaded.document == secret
    assert text.startswith("# a header\napiVersion: circle/v1\nkind: Secret\nname: api-key\n")


def test_each_seal_is_fresh() -> None:
    first, second = sealed(), sealed()
    assert first.ciphertext != second.ciphertext
    assert first.nonce != second.nonce
    assert first.recipients[0].encapsulation != second.recipients[0].encapsulation


def test_a_node_not_among_the_recipients_is_refused() -> None:
    with pytest.raises(NotARecipient) as refused:
        seal.open_secret(sealed(), "node-c", xwing.generate())
    assert str(refused.value) == (
        "secret api-key is not sealed to node node-c (sealed to node-a, node-b): the owners "
        "reseal it (circle secret reseal api-key)"
    )


def test_a_node_whose_key_was_rotated_is_told_so() -> None:
    secret = sealed()
    new = xwing.generate()
    with pytest.raises(WrongRecipient) as refused:
        seal.open_secret(secret, "node-a", new)
    assert str(refused.value) == (
        f"secret api-key: node node-a's copy is sealed to KEM key {secret.recipients[0].kem_key}, "
        f"and this node holds {xwing.fingerprint(new.public_bytes)} (circle secret reseal api-key)"
    )


def _recipient(secret: Secret, **fields: object) -> list[dict[str, object]]:
    recipients = [r.model_dump(by_alias=True) for r in secret.recipients]
    recipients[0].update(fields)
    return recipients


CIPHERTEXT = (
    "secret api-key: the ciphertext does not authenticate under its binding: the ciphertext, "
    "nonce, circle, name, workloads or digests changed after sealing"
)
WRAPPED = (
    "secret api-key: node node-a's sealed copy of the data key does not authenticate: its "
    "encapsulation, wrapped key or the binding (circle, name, workloads, digests) changed "
    "after sealing"
)
TAMPERED: dict[str, tuple[Callable[[Secret], Secret], str]] = {
    "ciphertext-first-byte": (lambda s: changed(s, ciphertext=flip(s.ciphertext)), CIPHERTEXT),
    "ciphertext-tag": (lambda s: changed(s, ciphertext=flip(s.ciphertext, -1)), CIPHERTEXT),
    "nonce": (lambda s: changed(s, nonce=flip(s.nonce)), CIPHERTEXT),
    "another-workload": (lambda s: changed(s, workloads=["langid", "shell"]), WRAPPED),
    "workload-renamed": (lambda s: changed(s, workloads=["shell"]), WRAPPED),
    "digests-dropped": (lambda s: changed(s, digests=[]), WRAPPED),
    "digest-swapped": (lambda s: changed(s, digests=[OTHER_DIGEST]), WRAPPED),
    "another-circle": (lambda s: changed(s, circle="other-circle"), WRAPPED),
    "renamed": (
        lambda s: changed(s, name="db-password"),
        WRAPPED.replace("api-key", "db-password", 1),
    ),
    "encapsulation-mlkem-half": (
        lambda s: changed(
            s, recipients=_recipient(s, encapsulation=flip(s.recipients[0].encapsulation, 7))
        ),
        WRAPPED,
    ),
    "encapsulation-x25519-half": (
        lambda s: changed(
            s, recipients=_recipient(s, encapsulation=flip(s.recipients[0].encapsulation, 1100))
        ),
        WRAPPED,
    ),
    "wrapped-key": (
        lambda s: changed(
            s, recipients=_recipient(s, wrappedKey=flip(s.recipients[0].wrapped_key))
        ),
        WRAPPED,
    ),
}


@pytest.mark.parametrize("case", TAMPERED.values(), ids=TAMPERED.keys())
def test_a_changed_byte_or_binding_is_refused_and_yields_nothing(
    case: tuple[Callable[[Secret], Secret], str],
) -> None:
    tamper, message = case
    with pytest.raises(SealBroken) as refused:
        seal.open_secret(tamper(sealed()), "node-a", KEYS["node-a"])
    assert str(refused.value) == message


def test_a_recipient_moved_from_another_secret_is_refused() -> None:
    """The same nodes, another secret (bound to another workload): its copy of node-a's data
    key does not open this one, though node-a holds the right key for it."""
    mine = sealed()
    theirs = sealed(seal.Binding("example-ai-circle", "api-key", ("shell",), (DIGEST,)))
    mixed = changed(mine, recipients=[r.model_dump(by_alias=True) for r in theirs.recipients])
    with pytest.raises(SealBroken) as refused:
        seal.open_secret(mixed, "node-a", KEYS["node-a"])
    assert str(refused.value) == WRAPPED


def test_a_copy_relabelled_for_another_node_is_refused() -> None:
    secret = sealed()
    swapped = [r.model_dump(by_alias=True) for r in secret.recipients]
    swapped[0]["node"], swapped[1]["node"] = swapped[1]["node"], swapped[0]["node"]
    with pytest.raises(WrongRecipient):
        seal.open_secret(changed(secret, recipients=swapped), "node-a", KEYS["node-a"])


@pytest.mark.parametrize(
    ("circle", "workload", "digest", "message"),
    [
        ("example-ai-circle", "langid", DIGEST, None),
        ("other", "langid", DIGEST,
         "secret api-key is bound to circle 'example-ai-circle', not 'other'"),
        ("example-ai-circle", "shell", DIGEST,
         "secret api-key is bound to workloads langid, not shell"),
        (
            "example-ai-circle", "langid", OTHER_DIGEST,
            f"secret api-key is bound to artifacts {DIGEST}; workload langid runs {OTHER_DIGEST}",
        ),
    ],
    ids=["released", "another-circle", "another-workload", "another-artifact"],
)  # fmt: skip
def test_release_only_to_the_bound_workload_and_artifact(
    circle: str, workload: str, digest: str, message: str | None
) -> None:
    secret = sealed()
    if message is None:
        seal.check_release(secret, circle, workload, digest)
        return
    with pytest.raises(NotReleased) as refused:
        seal.check_release(secret, circle, workload, digest)
    assert str(refused.value) == message


def test_without_digests_any_artifact_of_the_workload_is_released() -> None:
    secret = sealed(seal.Binding("example-ai-circle", "api-key", ("langid",)))
    seal.check_release(secret, "example-ai-circle", "langid", OTHER_DIGEST)


@pytest.mark.parametrize(
    ("value", "recipients", "message"),
    [
        (b"", {"node-a": KEYS["node-a"].public_key_line()}, "refusing to seal an empty value"),
        (b"x" * (64 * 1024 + 1), {"node-a": KEYS["node-a"].public_key_line()},
         "a secret holds at most 65536 bytes, found 65537"),
        (b"x", {}, "no node to seal it to"),
        (b"x", {"node-a": "x-wing " + base64.b64encode(b"\xff" * 1216).decode()},
         "node node-a: the ML-KEM-768 half of the X-Wing public key is not a valid key"),
    ],
    ids=["empty", "too-large", "no-recipient", "bad-key"],
)  # fmt: skip
def test_sealing_refuses(value: bytes, recipients: dict[str, str], message: str) -> None:
    with pytest.raises(SecretError) as refused:
        seal.seal(value, BINDING, recipients)
    assert str(refused.value) == message


# -- the document ----------------------------------------------------------------------------


def _problems(text: str) -> list[str]:
    with pytest.raises(DocumentError) as refused:
        parse_document(text.encode(), "secrets/api-key.yaml", [KINDS["Secret"]])
    return [f"{p.mark.line}:{p.message}" for p in refused.value.problems]


SECRET = sealed()
SHORT_NONCE = base64.b64encode(b"\0" * 11).decode()
SHORT_ENCAPSULATION = base64.b64encode(b"\0" * 1119).decode()
DOCUMENTS = {
    "unknown-field": ({"kind: Secret\n": "kind: Secret\nvalue: hunter2\n"},
                      "3:unknown field 'value' (expected one of: apiVersion, kind, name, "
                      "description, circle, workloads, digests, algorithm, nonce, ciphertext, "
                      "recipients)"),
    "short-nonce": ({SECRET.nonce: SHORT_NONCE}, "invalid nonce: 11 bytes, expected 12"),
    "short-encapsulation": ({SECRET.recipients[0].encapsulation: SHORT_ENCAPSULATION},
                            "invalid encapsulation: 1119 bytes, expected 1120"),
    "other-algorithm": ({"algorithm: x-wing+aes-256-gcm": "algorithm: rsa"},
                        "7:expected 'x-wing+aes-256-gcm', found the string 'rsa'"),
    "duplicate-key": ({"circle: ": "circle: a\ncircle: "},
                      "5:duplicate key 'circle' (first defined at line 4)"),
    "duplicate-recipient": ({"  - node: node-b": "  - node: node-a"},
                            "15:duplicate recipient 'node-a' (also at item 1)"),
    "alias": ({"workloads: [langid]": "workloads: &w [langid]\nx: *w"},
              "5:YAML anchor &w is not allowed (anchors and aliases are refused)"),
    "bad-yaml": ({"recipients:": "recipients: ["},
                 "11:invalid YAML: expected a value, but found '-' (while parsing a flow node)"),
}  # fmt: skip


@pytest.mark.parametrize("case", DOCUMENTS.values(), ids=DOCUMENTS.keys())
def test_documents_that_are_not_a_secret_are_refused_with_where_and_why(
    case: tuple[dict[str, str], str],
) -> None:
    replace, expected = case
    text = seal.render(SECRET)
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new, 1)
    found = _problems(text)
    assert len(found) == 1
    assert found[0] == expected or found[0].endswith(expected), found


# -- the repository --------------------------------------------------------------------------


def _example_with_secret(tmp_path: Path, binding: seal.Binding, nodes: tuple[str, ...]) -> Path:
    repo = copy_example(tmp_path / "circle")
    without_secrets(repo)
    for name in nodes:
        path = repo / "nodes" / f"{name}.yaml"
        text = path.read_text()
        line = (
            KEYS[name].public_key_line(name) if name in KEYS else xwing.generate().public_key_line()
        )
        path.write_text(text.replace("failureDomain:", f"kemPublicKey: {line}\nfailureDomain:", 1))
    lines = {name: KEYS[name].public_key_line() for name in KEYS}
    (repo / "secrets").mkdir()
    (repo / "secrets" / f"{binding.secret}.yaml").write_text(
        seal.render(seal.seal(VALUE, binding, lines))
    )
    return repo


def _found(repo: Path) -> list[tuple[str, str, str]]:
    report = check_circle_dir(repo)
    return [
        (p.file.rpartition("/")[2], p.severity.value, p.message)
        for p in report.problems
        if "secret" in p.file or "secret" in p.message
    ]


def test_a_sealed_secret_fits_the_example(tmp_path: Path) -> None:
    binding = seal.Binding("example-ai-circle", "api-key", ("langid",))
    repo = _example_with_secret(tmp_path, binding, ("node-a", "node-b"))
    report = check_circle_dir(repo)
    assert report.errors == []
    assert report.state.secrets.keys() == {"api-key"}
    assert _found(repo) == []


def test_a_secret_that_does_not_fit_its_repository_is_reported(tmp_path: Path) -> None:
    binding = seal.Binding("other-circle", "api-key", ("langid", "ghost"))
    repo = _example_with_secret(tmp_path, binding, ("node-a", "node-c"))
    workload = repo / "workloads" / "langid.yaml"
    text = workload.read_text()
    assert "secrets:" not in text
    workload.write_text(text + "secrets:\n  - secret: api-key\n  - secret: missing\n")
    found = _found(repo)
    assert ("api-key.yaml", "error",
            "sealed for circle 'other-circle', but this is circle 'example-ai-circle': no node "
            "of it would release the value") in found  # fmt: skip
    assert ("api-key.yaml", "error", "unknown workload 'ghost' (workloads: langid)") in found
    assert ("langid.yaml", "error", "unknown secret 'missing' (secrets: api-key)") in found
    kem = KEYS["node-b"].public_bytes
    assert any(
        m.startswith(f"sealed to KEM key {xwing.fingerprint(kem)} of node node-b, which now has "
                     "no kemPublicKey")
        for _, _, m in found
    ), found  # fmt: skip
    assert any(
        m.startswith("not sealed to node(s) node-c: they cannot release it") for _, _, m in found
    )


def test_a_workload_naming_a_secret_not_bound_to_it_is_an_error(tmp_path: Path) -> None:
    binding = seal.Binding("example-ai-circle", "api-key", ("other",))
    repo = _example_with_secret(tmp_path, binding, ("node-a", "node-b"))
    workload = repo / "workloads" / "langid.yaml"
    workload.write_text(
        workload.read_text() + "secrets:\n  - secret: api-key\n    env: API_KEY_FILE\n"
    )
    assert (
        "langid.yaml", "error",
        "secret api-key is sealed for workloads other, not langid: it would never be released "
        "to it",
    ) in _found(repo)  # fmt: skip


def test_release_checks_the_binding_before_it_decrypts() -> None:
    secret = sealed()
    key = KEYS["node-a"]

    def release(workload: str, digest: str, node: str = "node-a") -> bytes:
        return seal.release(
            secret, circle="example-ai-circle", workload=workload, digest=digest, node=node,
            key=key,
        )  # fmt: skip

    assert release("langid", DIGEST) == VALUE
    with pytest.raises(NotReleased):
        release("langid", OTHER_DIGEST)
    with pytest.raises(NotReleased):
        release("shell", DIGEST)
    with pytest.raises(NotARecipient):
        release("langid", DIGEST, node="node-c")
