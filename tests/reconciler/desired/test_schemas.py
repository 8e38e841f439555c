"""The JSON Schemas in schemas/ are the models' own, and editors can use them on every
document: the example's and the shipped presets'."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from reconciler.desired.schemas import WRITE_COMMAND, render_schemas
from reconciler.desired.yamlparse import parse_yaml
from tests.conftest import EXAMPLE, ROOT, Result

SCHEMAS = ROOT / "schemas"
SCHEMA_LINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$", re.MULTILINE)
DOCUMENTS = sorted(
    [*EXAMPLE.glob("*.yaml"), *EXAMPLE.glob("*/*.yaml"), *(ROOT / "policies").glob("*/*.yaml")]
)


def test_schema_files_match_the_models() -> None:
    generated = render_schemas()
    stale = [
        name
        for name, text in generated.items()
        if not (SCHEMAS / name).is_file() or (SCHEMAS / name).read_text(encoding="utf-8") != text
    ]
    extra = sorted({p.name for p in SCHEMAS.glob("*.json")} - set(generated))
    assert not stale, f"schemas/ is out of date ({', '.join(stale)}): run `{WRITE_COMMAND}`"
    assert not extra, f"schemas/ has files no model generates: {extra}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_document_names_its_schema_and_satisfies_it(document: Path) -> None:
    text = document.read_text(encoding="utf-8")
    match = SCHEMA_LINE.search(text.splitlines()[0])
    assert match, f"{document}: first line must be '# yaml-language-server: $schema=...'"
    schema_path = (document.parent / match.group(1)).resolve()
    assert schema_path.parent == SCHEMAS, f"{document}: schema line points outside schemas/"
    schema = json.loads(schema_path.read_text(encoding="utf-8"))

    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(parse_yaml(text).value)


def test_schema_rejects_what_the_model_rejects() -> None:
    schema = json.loads((SCHEMAS / "workload.json").read_text(encoding="utf-8"))
    document = parse_yaml((EXAMPLE / "workloads/langid.yaml").read_text(encoding="utf-8")).value
    validator = jsonschema.Draft202012Validator(schema)

    unknown_field = {**document, "replica": 2}
    wrong_kind = {**document, "kind": "Node"}
    bad_digest = {**document, "artifact": {"build": "x", "digest": "sha256:abc"}}

    for broken in (unknown_field, wrong_kind, bad_digest):
        assert list(validator.iter_errors(broken)), broken


def test_schemas_check_command_reports_drift(tmp_path: Path, circle: Callable[..., Result]) -> None:
    assert circle("schemas", "--write", "--dir", str(tmp_path)).code == 0
    assert circle("schemas", "--check", "--dir", str(tmp_path)).code == 0

    (tmp_path / "node.json").write_text("{}\n", encoding="utf-8")
    result = circle("schemas", "--check", "--dir", str(tmp_path))

    assert result.code == 1
    assert result.stdout.strip() == f"{tmp_path}: out of date: node.json; run `{WRITE_COMMAND}`"
    listed = circle("schemas", "--dir", str(tmp_path))  # lists, writes nothing
    assert [str(tmp_path / "node.json"), "stale"] in [
        line.split() for line in listed.stdout.splitlines()
    ]
    assert (tmp_path / "node.json").read_text(encoding="utf-8") == "{}\n"
    assert circle("schemas", "--write", "--dir", str(tmp_path)).stdout.strip() == (
        f"{tmp_path}: 1 schema file(s) written"
    )
    assert circle("schemas", "--check", "--dir", str(tmp_path), "-o", "json").json() == {
        "directory": str(tmp_path),
        "stale": [],
    }
