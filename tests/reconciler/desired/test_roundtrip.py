"""Round trips through YAML: every valid document survives dump -> parse unchanged, and parsing
any bytes at all either succeeds or raises `DocumentError` with located problems, nothing else.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from reconciler.desired.documents import Loaded, parse_document
from reconciler.desired.model import KINDS, Document
from reconciler.desired.problems import DocumentError
from tests.strategies import DOCUMENTS

ALL_KINDS = tuple(KINDS.values())
KIND_NAMES = sorted(DOCUMENTS)
SPARSE_DUMPS = {
    "exclude_none": {"exclude_none": True},
    "exclude_defaults": {"exclude_defaults": True},
}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def to_yaml(data: Any) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    stream = io.StringIO()
    yaml.dump(data, stream)
    return stream.getvalue()


def parse(text: str, kind: str) -> Document:
    return parse_document(text.encode(), "x.yaml", [KINDS[kind]]).document


# -- valid documents round-trip ----------------------------------------------------------------


def test_every_kind_has_a_strategy() -> None:
    assert sorted(KINDS) == KIND_NAMES


@pytest.mark.parametrize("kind", KIND_NAMES)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_valid_document_round_trips_through_yaml(kind: str, data: st.DataObject) -> None:
    document = data.draw(DOCUMENTS[kind])
    text = to_yaml(document.model_dump(mode="json", by_alias=True))
    assert parse(text, kind) == document


@pytest.mark.parametrize("dump_options", SPARSE_DUMPS.values(), ids=SPARSE_DUMPS.keys())
@pytest.mark.parametrize("kind", KIND_NAMES)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_sparse_dump_round_trips_through_yaml(
    kind: str, dump_options: dict[str, bool], data: st.DataObject
) -> None:
    document = data.draw(DOCUMENTS[kind])
    dumped = document.model_dump(mode="json", by_alias=True, **dump_options)
    full = document.model_dump(mode="json", by_alias=True)
    assert dumped.keys() <= full.keys()
    assert parse(to_yaml(dumped), kind) == document


def test_sparse_dump_really_leaves_fields_out() -> None:
    # Guards the property above against dump options that silently stop doing anything.
    document = parse(
        "apiVersion: circle/v1\nkind: AdmissionPolicy\nname: open\nrules: {}\n", "AdmissionPolicy"
    )
    assert "description" in document.model_dump(mode="json", by_alias=True)
    assert document.model_dump(mode="json", by_alias=True, exclude_none=True) == {
        "apiVersion": "circle/v1",
        "kind": "AdmissionPolicy",
        "name": "open",
        "rules": {
            "requirePinnedArtifacts": False,
            "requireLockedBuilds": False,
            "requireHealthChecks": False,
        },
    }
    assert document.model_dump(mode="json", by_alias=True, exclude_defaults=True) == {
        "apiVersion": "circle/v1",
        "kind": "AdmissionPolicy",
        "name": "open",
        "rules": {},
    }


# -- parsing anything raises DocumentError or nothing --------------------------------------------


def parse_anything(data: bytes, expected: tuple[Any, ...] = ALL_KINDS) -> Loaded[Document] | None:
    """Parse `data`; on DocumentError check its problems are located within the file."""
    try:
        return parse_document(data, "x.yaml", expected)
    except DocumentError as error:
        problems = error.problems
    # YAML breaks lines at \n, \r and \r\n (and, in decoded text, at NEL, LS and PS), as editors
    # do; splitlines() knows all of these, and a few more that YAML refuses anyway.
    text = data.decode("utf-8", "replace")
    last_line = len(text.splitlines()) + 1
    assert problems
    for problem in problems:
        assert problem.file == "x.yaml"
        assert problem.message
        assert 1 <= problem.mark.line <= last_line, problem
        assert problem.mark.column >= 1, problem
    return None


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_document_error(data: bytes) -> None:
    parse_anything(data)


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_document_error(text: str) -> None:
    parse_anything(text.encode())


YAML_FRAGMENTS = [
    "apiVersion: circle/v1\n",
    "kind: Node\n",
    "kind: Circle\n",
    "name: a\n",
    "capacity:\n  cpu: ",
    "members:\n- id: a\n  keys:\n  - type: ",
    "sigstore",
    "ssh-ed25519 AAAA",
    "\n",
    "\r\n",
    "  ",
    "\t",
    ": ",
    "- ",
    "? ",
    "{",
    "}",
    "[",
    "]",
    ", ",
    "'",
    '"',
    "#",
    "|\n",
    ">-\n",
    "&anchor ",
    "*anchor",
    "<<: ",
    "!!str ",
    "!!int ",
    "!!binary ",
    "!!python/object/apply:os.system ",
    "!local ",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "%TAG ! tag:example.com,2000:\n",
    "null",
    "~",
    "true",
    "0o17",
    "0x1F",
    ".nan",
    "1e3",
    "-1",
    "500m",
    "2Gi",
    "\ufeff",
    "\x00",
    "\x85",
    "\u2028",
    "é",
]
yamlish_text = st.lists(st.sampled_from(YAML_FRAGMENTS) | st.text(max_size=3), max_size=30).map(
    "".join
)


@FUZZ
@given(yamlish_text)
def test_yaml_fragments_raise_only_document_error(text: str) -> None:
    parse_anything(text.encode())


junk_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(
        ["500m", "-1", "1.2345", "1Zi", "30s", "**", "../x", "/abs", "a\\b", "sha256:", "sigstore"]
    )
)
junk_values = st.recursive(
    junk_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)


def _places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every value inside `value` (dict keys and list indexes), root excluded."""
    children: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    found: list[tuple[Any, ...]] = []
    for key, child in children:
        found.append((*path, key))
        found.extend(_places(child, (*path, key)))
    return found


@st.composite
def mutated_documents(draw: st.DrawFn) -> tuple[str, Any]:
    """A valid document's data with up to three values replaced, removed or added."""
    kind = draw(st.sampled_from(KIND_NAMES))
    data = draw(DOCUMENTS[kind]).model_dump(mode="json", by_alias=True)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        # apiVersion and kind are left alone: they come first, so Hypothesis would favour them,
        # and a wrong one stops parsing before the model sees anything.
        places = [place for place in _places(data) if place not in (("apiVersion",), ("kind",))]
        *parent_path, key = draw(st.sampled_from(places))
        parent = data
        for step in parent_path:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace":
            parent[key] = draw(junk_values)
        elif action == "remove":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(junk_values)
        else:
            parent.insert(key, draw(junk_values))
    return kind, data


@FUZZ
@given(mutated_documents())
def test_mutated_documents_raise_only_document_error(mutated: tuple[str, Any]) -> None:
    kind, data = mutated
    loaded = parse_anything(to_yaml(data).encode(), (KINDS[kind],))
    assert loaded is None or isinstance(loaded.document, KINDS[kind].model)


NODE = """\
apiVersion: circle/v1
kind: Node
name: gpu-1
publicKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGkQ2tT2Ew1X8w3cZ8D4yZ7vE1p0zYx3mM5B1m2N3o4P
failureDomain: rack-a
capacity:
  cpu: {cpu}
  memory: 1Gi
"""


@pytest.mark.parametrize(
    ("cpu", "shown"),
    [(".inf", "inf"), ("-.inf", "-inf"), (".nan", "nan"), ("1e306", "1e+306"), ("-1", "-1")],
)
def test_cpu_number_out_of_range_is_a_located_document_error(cpu: str, shown: str) -> None:
    # A thousand times 1e306 is an infinite float: it must be refused before it is rounded.
    with pytest.raises(DocumentError) as caught:
        parse_document(NODE.format(cpu=cpu).encode(), "x.yaml", [KINDS["Node"]])
    [problem] = caught.value.problems
    assert problem.message == f"invalid CPU quantity {shown}: expected 0 to 1000000 cores"
    assert (problem.mark.line, problem.mark.column) == (7, 8)
