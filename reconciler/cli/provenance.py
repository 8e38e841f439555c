"""`circle artifact verify-provenance NAME|ID`: do enough trusted builders vouch for a build?

`circle build --attest KEY` files each builder's signed statement in its chunk store, under
`attestations/<id hex>/`. This reads those of the local store and of every `--source` store and
checks them against the builders' public keys (`--trust [ID=]KEY.pub`): the artifact passes when
`--builders N` distinct trusted builders signed statements naming exactly its digest
(`builders.provenance.check_agreement`). NAME is a build of the circle at `--repo`, checked at
its locked digest; an artifact id is checked as given. Exit 0 verified, 1 not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from builders import BuildError, sshsig
from builders.provenance import Agreement, check_agreement, digest_of
from reconciler import wiring
from reconciler.cli.context import output_option, repo_option, settings
from reconciler.cli.render import ProblemsFound, print_json, stdout
from reconciler.desired.folder import check_circle_dir
from reconciler.errors import InputError
from reconciler.files import read_bounded

MAX_STATEMENT = 16 << 20  # a statement lists every file of the artifact with its sha256
MAX_SIGNATURE = 64 << 10
MAX_KEY_FILE = 16 << 10
STATEMENT_SUFFIX = ".intoto.json"


@dataclass(frozen=True)
class Found:
    """The attestations of one artifact read from the stores, and the files that could not be
    read as one (a statement without its signature, a link, a file over the limits)."""

    files: tuple[Path, ...]
    pairs: tuple[tuple[bytes, str], ...]
    unreadable: tuple[tuple[Path, str], ...]


def read_attestations(stores: list[Path], artifact_id: str) -> Found:
    files: list[Path] = []
    pairs: list[tuple[bytes, str]] = []
    unreadable: list[tuple[Path, str]] = []
    for store in stores:
        folder = store / "attestations" / artifact_id.removeprefix("sha256:")
        if not folder.is_dir() or folder.is_symlink():
            continue
        for statement in sorted(folder.glob(f"*{STATEMENT_SUFFIX}")):
            try:
                pair = _read_pair(statement)
            except InputError as error:
                unreadable.append((statement, str(error).removeprefix(f"{statement}: ")))
                continue
            files.append(statement)
            pairs.append(pair)
    return Found(tuple(files), tuple(pairs), tuple(unreadable))


def _read_pair(statement: Path) -> tuple[bytes, str]:
    signature_file = statement.with_name(statement.name + ".sig")
    data = read_bounded(statement, MAX_STATEMENT)
    if len(data) > MAX_STATEMENT:
        raise InputError(f"{statement}: over {MAX_STATEMENT} bytes")
    if not signature_file.exists():
        raise InputError(f"{statement}: no signature beside it ({signature_file.name})")
    armored = read_bounded(signature_file, MAX_SIGNATURE)
    if len(armored) > MAX_SIGNATURE:
        raise InputError(f"{statement}: its signature is over {MAX_SIGNATURE} bytes")
    try:
        return data, armored.decode("ascii")
    except UnicodeDecodeError:
        raise InputError(f"{statement}: its signature is not armored text") from None


def trusted_builders(specs: tuple[str, ...]) -> dict[str, str]:
    """`[ID=]PUBKEY_FILE` -> {builder id: public key line}. The id defaults to what
    `circle build --attest` signs as: the key's comment, else its fingerprint."""
    trusted: dict[str, str] = {}
    for spec in specs:
        named, separator, rest = spec.partition("=")
        if separator and named and "/" not in named:
            builder_id, key_path = named, Path(rest)
        else:
            builder_id, key_path = "", Path(spec)
        text = read_bounded(key_path, MAX_KEY_FILE)
        if text.lstrip().startswith(b"-----BEGIN"):
            raise InputError(f"{key_path} is a private key: give its public key {key_path}.pub")
        lines = text.decode("utf-8", errors="replace").strip().splitlines()
        line = lines[0].strip() if lines else ""
        try:
            fingerprint = sshsig.fingerprint(line)
        except sshsig.SignatureError as error:
            raise InputError(f"--trust {key_path}: {error}") from None
        fields = line.split()
        builder_id = builder_id or (fields[2] if len(fields) > 2 else fingerprint)
        if builder_id in trusted:
            raise InputError(f"--trust: builder {builder_id!r} is given twice")
        trusted[builder_id] = line
    return trusted


def _artifact_of(target: str, repo: Path) -> tuple[str | None, str]:
    """(build name or None, artifact id) of NAME|ID."""
    if target.startswith("sha256:"):
        try:
            digest_of(target)
        except BuildError as error:
            raise InputError(str(error)) from None
        return None, target
    report = check_circle_dir(repo)
    loaded = report.state.builds.get(target)
    if loaded is None:
        broken = [p for p in report.errors if p.file.endswith(f"builds/{target}.yaml")]
        if broken:
            raise ProblemsFound(f"{repo}: build {target} cannot be read", broken)
        known = ", ".join(sorted(report.state.builds)) or "none"
        raise InputError(f"no build named {target} (builds: {known})")
    if loaded.document.digest is None:
        raise InputError(f"build {target} has no locked digest: run `circle build {target}`")
    return target, loaded.document.digest


@click.command("verify-provenance")
@click.argument("target", metavar="NAME|ID")
@click.option(
    "--trust",
    "trust_specs",
    multiple=True,
    required=True,
    metavar="[ID=]PUBKEY_FILE",
    help="A trusted builder's public key (repeatable); ID defaults to the key's comment, as "
    "`circle build --attest` signs.",
)
@click.option(
    "--builders",
    "required",
    type=click.IntRange(1),
    default=None,
    metavar="N",
    help="Distinct trusted builders that must agree (default: every --trust).",
)
@repo_option
@click.option(
    "--store",
    "store_dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="The local chunk store (default: $XDG_CACHE_HOME/circle/store).",
)
@click.option(
    "--source",
    "source_dirs",
    multiple=True,
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    metavar="STORE_DIR",
    help="Another builder's chunk store whose attestations count too (repeatable).",
)
@output_option
def command(
    target: str,
    trust_specs: tuple[str, ...],
    required: int | None,
    repo: Path,
    store_dir: Path | None,
    source_dirs: tuple[Path, ...],
    output: str | None,
) -> int:
    """Exit 0 when enough trusted builders signed provenance for build NAME's locked digest
    (or artifact ID), 1 naming who agrees and why each other attestation does not count."""
    trusted = trusted_builders(trust_specs)
    needed = len(trusted) if required is None else required
    if needed > len(trusted):
        raise InputError(f"--builders {needed}: only {len(trusted)} trusted builders given")
    build_name, artifact_id = _artifact_of(target, repo)
    stores = [store_dir or wiring.default_chunk_store(), *source_dirs]
    found = read_attestations(stores, artifact_id)
    try:
        agreement = check_agreement(artifact_id, found.pairs, trusted, needed)
    except BuildError as error:  # a trusted key shared by two builders
        raise InputError(str(error)) from error
    excluded = [(found.files[index - 1], reason) for index, reason in agreement.excluded]
    excluded += list(found.unreadable)
    if settings(output).json:
        print_json(
            {
                "build": build_name,
                "artifact": artifact_id,
                "verified": agreement.met,
                "required": needed,
                "agreeing": list(agreement.agreeing),
                "excluded": [{"file": str(file), "reason": reason} for file, reason in excluded],
            }
        )
    else:
        _print(build_name, agreement, excluded)
    return 0 if agreement.met else 1


def _print(build_name: str | None, agreement: Agreement, excluded: list[tuple[Path, str]]) -> None:
    what = f"{build_name} {agreement.artifact_id}" if build_name else agreement.artifact_id
    verdict = "provenance verified" if agreement.met else "provenance not verified"
    agreeing = ", ".join(agreement.agreeing) or "none"
    stdout.print(
        f"{what}: {verdict}: {len(agreement.agreeing)} of {agreement.required} required "
        f"trusted builders agree ({agreeing})",
        markup=False,
    )
    for file, reason in excluded:
        stdout.print(f"  not counted: {file}: {reason}", markup=False)
