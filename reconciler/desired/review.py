"""What a proposed transition changes, in desired-state terms: what `circle review` shows. Pure.

`describe_changes` takes the documents of the from-tree and the to-tree (bytes by path) and the
changed paths, and returns one `Change` per thing an owner decides on: the circle's settings,
each member and rule, each node, workload, build and volume, and each other file. Documents are
compared as models, not as text; one that does not parse is shown as such and never stops the
rest of the review.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.desired.documents import parse_document
from reconciler.desired.model import REPOSITORY_KINDS, Document, Kind
from reconciler.desired.model.types import key_fingerprint, ssh_fingerprint
from reconciler.desired.problems import DocumentError
from reconciler.desired.repository import PathRole, classify

SHORT = 12  # digest characters shown: enough to tell two artifacts apart at a glance
LONG_TEXT = 60  # longer text (a description) is reported as changed, not quoted
FORMATTING_ONLY = "comments or formatting only"

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PLAIN = re.compile(r"[^\s,;()\[\]\"]+")
# Lists of mappings are matched by the first of these fields that names each item uniquely.
_ITEM_KEYS = ("name", "id", "volume", "env", "path", "secret")

Json = Any  # a value of model_dump(mode="json"): dict, list, str, int, float, bool or None
SortKey = tuple[int, int, str, int, str]


class Action(enum.StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


@dataclass(frozen=True, slots=True)
class Change:
    """One thing a transition changes, as an owner reviews it."""

    subject: str  # "circle", "consensus", "member dave", "workload langid", "file src/x.py"
    action: Action
    details: tuple[str, ...]  # "replicas 2 -> 4"; for added things, a short summary
    path: str  # the repository path that carries it

    def line(self) -> str:
        """One line: "workload langid: replicas 2 -> 4", "member dave added (weight 1, 1 key)"."""
        if self.action == Action.CHANGED and self.details:
            return f"{self.subject}: {'; '.join(self.details)}"
        text = f"{self.subject} {self.action}"
        return f"{text} ({', '.join(self.details)})" if self.details else text


def describe_changes(
    old: Mapping[str, bytes] | None, new: Mapping[str, bytes], changed: Iterable[str]
) -> list[Change]:
    """Describe the changed paths: the circle first, then documents by kind and name, then files.

    `old` and `new` hold the bytes of every document of the from-tree and the to-tree (`old` is
    None for a first commit, where everything is added); a document missing from one side is
    absent from that tree. They may hold other paths too: a changed non-document path counts as
    added or removed when only one side holds it, and as changed otherwise.
    """
    entries: list[tuple[SortKey, Change]] = []
    for path in sorted(set(changed)):
        role, kind = classify(path)
        if role is PathRole.DOCUMENT and kind is not None:
            entries.extend(_document_changes(path, kind, old, new))
        else:
            action = _presence(path in (old or {}), path in new, first=old is None)
            entries.append(((2, 0, path, 0, ""), Change(f"file {path}", action, (), path)))
    entries.sort(key=lambda entry: entry[0])
    return [change for _, change in entries]


def _presence(before: bool, after: bool, *, first: bool) -> Action:
    if after and not before:
        return Action.ADDED
    if before and not after:
        return Action.REMOVED
    return Action.ADDED if first else Action.CHANGED


# -- documents -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Unparsable:
    message: str


def _load(data: bytes | None, path: str, kind: Kind) -> dict[str, Json] | _Unparsable | None:
    if data is None:
        return None
    try:
        document: Document = parse_document(data, path, [kind]).document
    except DocumentError as error:
        return _Unparsable(str(error).splitlines()[0])
    dumped: dict[str, Json] = document.model_dump(mode="json", by_alias=True)
    dumped.pop("apiVersion", None)
    dumped.pop("kind", None)
    return dumped


def _document_changes(
    path: str, kind: Kind, old: Mapping[str, bytes] | None, new: Mapping[str, bytes]
) -> list[tuple[SortKey, Change]]:
    old_bytes = None if old is None else old.get(path)
    before = _load(old_bytes, path, kind)
    after = _load(new.get(path), path, kind)
    if kind.folder is None:
        subject, key = "circle", (0, 0, "", 0, "")
    else:
        stem = path.rpartition("/")[2].removesuffix(".yaml")
        subject = f"{kind.name.lower()} {stem}"
        key = (1, REPOSITORY_KINDS.index(kind), stem, 0, "")

    def one(action: Action, *details: str) -> list[tuple[SortKey, Change]]:
        return [(key, Change(subject, action, details, path))]

    if isinstance(after, _Unparsable):
        return one(Action.CHANGED, f"does not parse: {after.message}")
    if after is None:
        return one(Action.REMOVED if before is not None else Action.CHANGED)
    summary = _SUMMARIES[kind.name](after)
    if before is None:
        if kind.folder is None:
            return one(Action.ADDED, *summary) + list(_circle_parts(path, None, after))
        return one(Action.ADDED, *summary)
    if isinstance(before, _Unparsable):
        return one(Action.CHANGED, "parses now (did not before)", *summary)
    if old_bytes == new.get(path):
        return one(Action.CHANGED, "content unchanged")
    if kind.folder is None:
        parts = list(_circle_parts(path, before, after))
        return parts or one(Action.CHANGED, FORMATTING_ONLY)
    details = _DIFFERS[kind.name].diff(before, after)
    return one(Action.CHANGED, *(details or [FORMATTING_ONLY]))


# -- the circle: its settings, then each member and rule on its own ------------------------------


def _circle_parts(
    path: str, before: dict[str, Json] | None, after: dict[str, Json]
) -> Iterator[tuple[SortKey, Change]]:
    if before is not None:
        top = _CIRCLE.diff(
            _without(before, "members", "consensus"), _without(after, "members", "consensus")
        )
        if top:
            yield (0, 0, "", 0, ""), Change("circle", Action.CHANGED, tuple(top), path)
        consensus = _CIRCLE.diff(
            _without(before["consensus"], "rules"), _without(after["consensus"], "rules")
        )
        if consensus:
            yield (0, 0, "", 1, ""), Change("consensus", Action.CHANGED, tuple(consensus), path)
    old_members = _by(before["members"] if before else [], "id")
    new_members = _by(after["members"], "id")
    for member_id in sorted(old_members.keys() | new_members.keys()):
        change = _named_change(
            f"member {member_id}",
            path,
            old_members.get(member_id),
            new_members.get(member_id),
            _member_summary,
            _member_details,
        )
        if change is not None:
            yield (0, 0, "", 2, member_id), change
    old_rules = _by([_rule_view(r) for r in before["consensus"]["rules"]] if before else [], "name")
    new_rules = _by([_rule_view(r) for r in after["consensus"]["rules"]], "name")
    for name in sorted(old_rules.keys() | new_rules.keys()):
        change = _named_change(
            f"rule {name}",
            path,
            old_rules.get(name),
            new_rules.get(name),
            _rule_summary,
            lambda a, b: _CIRCLE.diff(_without(a, "name"), _without(b, "name")),
        )
        if change is not None:
            yield (0, 0, "", 3, name), change


def _named_change(
    subject: str,
    path: str,
    old: dict[str, Json] | None,
    new: dict[str, Json] | None,
    summary: Callable[[dict[str, Json]], list[str]],
    details: Callable[[dict[str, Json], dict[str, Json]], list[str]],
) -> Change | None:
    if old is None:
        return None if new is None else Change(subject, Action.ADDED, tuple(summary(new)), path)
    if new is None:
        return Change(subject, Action.REMOVED, (), path)
    found = details(old, new) if old != new else []
    return Change(subject, Action.CHANGED, tuple(found), path) if found else None


def _member_details(old: dict[str, Json], new: dict[str, Json]) -> list[str]:
    found = _CIRCLE.diff(_without(old, "id", "keys"), _without(new, "id", "keys"))
    old_keys = {_key_identity(key): key for key in old["keys"]}
    new_keys = {_key_identity(key): key for key in new["keys"]}
    for identity, key in new_keys.items():
        if identity not in old_keys:
            found.append(f"key added {_key_text(key)}")
        elif old_keys[identity] != key:
            found.append(f"key {_key_text(key)}: comment changed")
    found.extend(
        f"key removed {_key_text(key)}"
        for identity, key in old_keys.items()
        if identity not in new_keys
    )
    return found


def _key_identity(key: dict[str, Json]) -> tuple[str, ...]:
    if key["type"] == "ssh-ed25519":
        return ("ssh-ed25519", ssh_fingerprint(key["key"]))
    if key["type"] == "ml-dsa-65":
        return ("ml-dsa-65", key_fingerprint(key["key"]))
    return ("sigstore", key["identity"], key["issuer"])


def _key_text(key: dict[str, Json]) -> str:
    if key["type"] == "ssh-ed25519":
        return _text(key["key"])
    if key["type"] == "ml-dsa-65":
        return f"ml-dsa-65 {key_fingerprint(key['key'])}"  # the 2.6 KB line says nothing
    return f"sigstore {key['identity']} ({key['issuer']})"


def _rule_view(rule: dict[str, Json]) -> dict[str, Json]:
    """A rule as owners read it: no member list means every member."""
    return {**rule, "members": "all" if rule["members"] is None else rule["members"]}


def _rule_summary(rule: dict[str, Json]) -> list[str]:
    members = "all members" if rule["members"] == "all" else _text(rule["members"])
    summary = [f"threshold {rule['threshold']} of {members}", f"paths {_text(rule['paths'])}"]
    if rule["required"]:
        summary.append(f"required {_text(rule['required'])}")
    if rule.get("signatures", "classic") != "classic":
        summary.append(f"signatures {rule['signatures']}")
    return summary


def _member_summary(member: dict[str, Json]) -> list[str]:
    return [f"weight {member['weight']}", _count(len(member["keys"]), "key")]


# -- summaries of added documents ----------------------------------------------------------------


def _circle_summary(circle: dict[str, Json]) -> list[str]:
    return [
        f"id {circle['id']}",
        f"version {circle['version']}",
        f"approvalLifetime {circle['consensus']['approvalLifetime']}",
    ]


def _node_summary(node: dict[str, Json]) -> list[str]:
    capacity = node["capacity"]
    gpus = capacity["gpus"]
    kinds = Counter(_gpu_text(gpu) for gpu in gpus)
    shown = next(iter(kinds)) if len(kinds) == 1 else _gpus_text(gpus)
    gpu_text = f"{_count(len(gpus), 'GPU')} ({shown})" if gpus else "no GPU"
    return [
        node["failureDomain"],
        f"cpu {capacity['cpu']}",
        f"memory {capacity['memory']}",
        gpu_text,
    ]


def _workload_summary(workload: dict[str, Json]) -> list[str]:
    artifact = workload["artifact"]
    pinned = _text(artifact["digest"]) if artifact["digest"] else "unpinned"
    summary = [f"artifact {artifact['build']} {pinned}", _count(workload["replicas"], "replica")]
    if workload["autoscale"]:
        summary.append(f"autoscale {_bounds(workload['autoscale'])}")
    resources = workload["resources"]
    summary += [f"cpu {resources['cpu']}", f"memory {resources['memory']}"]
    if resources["gpu"]:
        summary.append(_gpu_request_text(resources["gpu"]))
    return summary


def _build_summary(build: dict[str, Json]) -> list[str]:
    lock = f"lock {_text(build['digest'])}" if build["digest"] else "no lock"
    return [f"builder {build['builder']}", f"source {build['source']}", lock]


def _volume_summary(volume: dict[str, Json]) -> list[str]:
    return [
        f"k/n {volume['k']}/{volume['n']}",
        _count(len(volume["backends"]), "backend"),
        _count(len(volume["objects"]), "object"),
    ]


def _secret_summary(secret: dict[str, Json]) -> list[str]:
    summary = [f"for {', '.join(secret['workloads'])}"]
    if secret["digests"]:
        summary.append(f"artifacts {', '.join(short_digest(d) for d in secret['digests'])}")
    return [*summary, f"sealed to {', '.join(r['node'] for r in secret['recipients'])}"]


def _secret_view(secret: dict[str, Json]) -> dict[str, Json]:
    """Sealed bytes say nothing to a reviewer: the value shows as a short hash of its
    ciphertext (it changes with every seal; the value itself is never known here), the
    recipients as their nodes and (a rotation) their KEM keys."""
    view = _without(secret, "nonce", "ciphertext", "recipients")
    sealed = hashlib.sha256(str(secret["ciphertext"]).encode()).hexdigest()[:12]
    view["value"] = f"sealed {sealed}"
    view["sealedTo"] = ", ".join(r["node"] for r in secret["recipients"])
    view["kemKeys"] = [short_digest(r["kemKey"]) for r in secret["recipients"]]
    return view


_SUMMARIES: dict[str, Callable[[dict[str, Json]], list[str]]] = {
    "Circle": _circle_summary,
    "Node": _node_summary,
    "Workload": _workload_summary,
    "Build": _build_summary,
    "Volume": _volume_summary,
    "Secret": _secret_summary,
}


# -- field-level differences ---------------------------------------------------------------------

Hook = Callable[["_Differ", Json, Json], list[str]]


@dataclass(frozen=True)
class _Differ:
    """Field-level differences of two dumped documents, as lines "dotted.path old -> new".

    `hooks` word the fields owners care most about (by dotted path); `labels` rename paths;
    `view` reshapes a document before comparing (a volume's k and n read as one "k/n").
    """

    hooks: Mapping[str, Hook] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    view: Callable[[dict[str, Json]], dict[str, Json]] = lambda document: document

    def diff(self, old: dict[str, Json], new: dict[str, Json]) -> list[str]:
        return self.at(self.view(old), self.view(new), "")

    def at(self, old: Json, new: Json, path: str) -> list[str]:
        if old == new:
            return []
        hook = self.hooks.get(path)
        return hook(self, old, new) if hook is not None else self.generic(old, new, path)

    def generic(self, old: Json, new: Json, path: str) -> list[str]:
        label = self.labels.get(path, path)
        if isinstance(old, dict) and isinstance(new, dict):
            return list(self._mapping(old, new, path))
        if isinstance(old, list) and isinstance(new, list):
            return list(self._list(old, new, path, label))
        if old is None and isinstance(new, dict):
            return [_added(label, _summary(new))]
        if isinstance(old, dict) and new is None:
            return [f"{label} removed"]
        return [_scalar_change(label, old, new)]

    def _mapping(self, old: dict[str, Json], new: dict[str, Json], path: str) -> Iterator[str]:
        for key in [*new, *(key for key in old if key not in new)]:
            inner = f"{path}.{key}" if path else key
            label = self.labels.get(inner, inner)
            if key not in old:
                yield _added(label, _text(new[key]))
            elif key not in new:
                yield f"{label} removed"
            else:
                yield from self.at(old[key], new[key], inner)

    def _list(self, old: list[Json], new: list[Json], path: str, label: str) -> Iterator[str]:
        key = _item_key(old, new)
        if key is None:
            if len(old) == len(new) and any(isinstance(item, dict) for item in old + new):
                for index, (before, after) in enumerate(zip(old, new, strict=True)):
                    yield from self.at(before, after, f"{path}[{index}]")
            elif any(isinstance(item, dict) for item in old + new):
                yield f"{label} {len(old)} -> {len(new)} items"
            else:
                yield _scalar_change(label, old, new)
            return
        before, after = _by(old, key), _by(new, key)
        for name in [*after, *(name for name in before if name not in after)]:
            inner = f"{path}[{name}]"
            if name not in before:
                yield _added(inner, _summary(_without(after[name], key)))
            elif name not in after:
                yield f"{inner} removed"
            else:
                yield from self.at(before[name], after[name], inner)
        if [name for name in after if name in before] != [name for name in before if name in after]:
            yield f"{label} reordered"


def _item_key(old: list[Json], new: list[Json]) -> str | None:
    """The field that names every item of both lists, each once on each side; None if none."""
    if not old + new or not all(isinstance(item, dict) for item in old + new):
        return None
    for key in _ITEM_KEYS:
        if all(
            all(isinstance(item.get(key), str) for item in side)
            and len({item[key] for item in side}) == len(side)
            for side in (old, new)
        ):
            return key
    return None


def _autoscale(differ: _Differ, old: Json, new: Json) -> list[str]:
    if old is None:
        return [f"autoscale off -> {_bounds(new)} ({new['metric']}, target {_text(new['target'])})"]
    if new is None:
        return [f"autoscale {_bounds(old)} -> off"]
    found = []
    if _bounds(old) != _bounds(new):
        found.append(f"autoscale {_bounds(old)} -> {_bounds(new)}")
    rest = differ.generic(_without(old, "min", "max"), _without(new, "min", "max"), "autoscale")
    return found + rest


def _gpu_request(differ: _Differ, old: Json, new: Json) -> list[str]:
    if old is None or new is None:
        before = _gpu_request_text(old) if old else "none"
        after = _gpu_request_text(new) if new else "none"
        return [f"resources.gpu {before} -> {after}"]
    return differ.generic(old, new, "resources.gpu")


def _node_gpus(differ: _Differ, old: Json, new: Json) -> list[str]:
    return [f"capacity.gpus {_gpus_text(old)} -> {_gpus_text(new)}"]


def _volume_view(volume: dict[str, Json]) -> dict[str, Json]:
    """k and n read together: "k/n 4/6 -> 5/8" says more than two separate lines."""
    view: dict[str, Json] = {}
    for key, value in volume.items():
        if key == "k":
            view["k/n"] = f"{volume['k']}/{volume['n']}"
        elif key != "n":
            view[key] = value
    return view


_CIRCLE = _Differ()
_DIFFERS: dict[str, _Differ] = {
    "Node": _Differ(hooks={"capacity.gpus": _node_gpus}),
    "Workload": _Differ(
        hooks={"autoscale": _autoscale, "resources.gpu": _gpu_request},
        labels={"artifact.digest": "artifact digest", "artifact.build": "artifact build"},
    ),
    "Build": _Differ(labels={"digest": "lock digest"}),
    "Volume": _Differ(view=_volume_view),
    "Secret": _Differ(view=_secret_view),
}


# -- words ---------------------------------------------------------------------------------------


def short_digest(value: str) -> str:
    """`sha256:ad937c196613…` for a digest, `3f2a1c0d9e8b…` for a bare sha256; else as given."""
    if _DIGEST.fullmatch(value):
        return value[: len("sha256:") + SHORT] + "…"
    if _HEX64.fullmatch(value):
        return value[:SHORT] + "…"
    return value


def _string(value: str) -> str:
    if value.startswith(("ssh-ed25519 ", "ml-dsa-65 ")):  # a node's key halves: fingerprints
        try:
            fingerprint = key_fingerprint(value)
        except ValueError:
            pass
        else:
            kind, _, *comment = value.split(maxsplit=2)
            shown = f"{kind} {fingerprint[: len('SHA256:') + SHORT]}…"
            return f"{shown} ({comment[0]})" if comment else shown
    value = short_digest(value)
    return value if _PLAIN.fullmatch(value) else json.dumps(value, ensure_ascii=False)


def _text(value: Json) -> str:
    match value:
        case None:
            return "none"
        case bool():
            return "true" if value else "false"
        case float():
            return f"{value:g}"
        case int():
            return str(value)
        case str():
            return _string(value)
        case list() if any(isinstance(item, dict) for item in value):
            return _count(len(value), "item")
        case list():
            return "[" + ", ".join(_text(item) for item in value) + "]"
        case dict():
            return _summary(value)
    return str(value)


def _scalar_change(label: str, old: Json, new: Json) -> str:
    before, after = _text(old), _text(new)
    if any(len(text) > LONG_TEXT or "\n" in text for text in (before, after)):
        return f"{label} changed"
    return f"{label} {before} -> {after}"


def _summary(mapping: dict[str, Json], prefix: str = "") -> str:
    parts = []
    for key, value in mapping.items():
        if value is None or value == [] or value == {}:
            continue
        if isinstance(value, dict):
            parts.append(_summary(value, f"{prefix}{key}."))
        else:
            text = _text(value)
            long = len(text) > LONG_TEXT or "\n" in text
            parts.append(f"{prefix}{key} {'…' if long else text}")
    return ", ".join(parts)


def _added(label: str, summary: str) -> str:
    return f"{label} added ({summary})" if summary else f"{label} added"


def _bounds(autoscale: dict[str, Json]) -> str:
    return f"{autoscale['min']}..{autoscale['max']}"


def _gpu_request_text(gpu: dict[str, Json]) -> str:
    text = _count(gpu["count"], "optional GPU" if gpu["optional"] else "GPU")
    if gpu["minMemory"]:
        text += f" with at least {gpu['minMemory']}"
    if gpu["models"]:
        text += f" ({' or '.join(gpu['models'])})"
    return text


def _gpus_text(gpus: list[dict[str, Json]]) -> str:
    counts = Counter(_gpu_text(gpu) for gpu in gpus)
    return ", ".join(f"{count} x {model}" for model, count in counts.items()) or "none"


def _gpu_text(gpu: dict[str, Json]) -> str:
    return f"{gpu['model']} {gpu['memory']}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _by(items: list[dict[str, Json]], key: str) -> dict[str, dict[str, Json]]:
    return {item[key]: item for item in items}


def _without(mapping: dict[str, Json], *keys: str) -> dict[str, Json]:
    return {key: value for key, value in mapping.items() if key not in keys}
