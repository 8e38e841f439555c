"""Edit circle.yaml into its next version: text in, text out. Pure.

One change (`AddMember`, `RemoveMember`, `RotateKey`, `SetRule`) is applied to ruamel.yaml's
round-trip tree, so comments, key order, quoting, flow lists and indentation stay as they were;
then `version` and `previous` are set to what the approved head requires (the caller says which),
and the text is read back by the strict parser with every check `circle validate` applies to
circle.yaml. A change that would break a rule is refused (`PolicyEditError`) saying what, and
what is expected, before anything is written.

Comments follow the item they describe: those inside a removed member go with it, and so do the
lines just above it; a comment above a list's first item describes the list and stays; one after
a list's last item stays after the list, whatever is appended.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString
from ruamel.yaml.tokens import CommentToken

from reconciler.desired.documents import Loaded, parse_document
from reconciler.desired.model import KINDS, Circle, Member
from reconciler.desired.model.circle import POLICY_FILE
from reconciler.desired.model.types import MLDSA65, key_fingerprint, member_key_blob
from reconciler.desired.problems import DocumentError
from reconciler.errors import InputError

SSH_KEY = "ssh-ed25519"
CLASSIC = "classic"


class PolicyEditError(InputError):
    """A change circle.yaml cannot take: the message says what and what is expected."""


@dataclass(frozen=True, slots=True)
class AddMember:
    member_id: str
    key: str  # an `ssh-ed25519 AAAA... [comment]` or `ml-dsa-65 BASE64 [comment]` line
    weight: int | None = None  # None: the default weight (1), not written


@dataclass(frozen=True, slots=True)
class RemoveMember:
    member_id: str


@dataclass(frozen=True, slots=True)
class RotateKey:
    """TUF-style rotation: `key` is added; the member's old key of the same type (SSH or
    ML-DSA) goes unless `keep_old`."""

    member_id: str
    key: str
    old: str | None = None  # which key goes: a public key line or its SHA256: fingerprint
    keep_old: bool = False


@dataclass(frozen=True, slots=True)
class SetRule:
    """Set fields of a consensus rule, or add the rule (then `paths` and `threshold` are
    needed). `members` replaces the rule's member list; `all_members` removes it (every member
    counts); `required` replaces the required members (empty: none)."""

    name: str
    threshold: int | None = None
    paths: tuple[str, ...] | None = None
    members: tuple[str, ...] | None = None
    all_members: bool = False
    required: tuple[str, ...] | None = None
    signatures: str | None = None  # classic, hybrid or post-quantum: what the rule counts


Change = AddMember | RemoveMember | RotateKey | SetRule


@dataclass(frozen=True)
class Edited:
    """The next circle.yaml: its text, what the change did in words (empty: nothing to change,
    and `text` is the input), and the text read back as a policy."""

    text: str
    done: tuple[str, ...]
    loaded: Loaded[Circle] | None  # None when nothing changed

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def edit_policy(text: str, change: Change, *, version: int, previous: str) -> Edited:
    """Apply `change` to the circle.yaml `text` and make it version `version` naming `previous`
    (the sha256 of the approved circle.yaml). PolicyEditError when the change or its result
    breaks a rule."""
    crlf = "\r\n" in text
    source = text.replace("\r\n", "\n") if crlf else text  # ruamel keeps \r in comments
    yaml = _yaml(source)
    try:
        data = yaml.load(source)
    except YAMLError as error:
        raise PolicyEditError(f"{POLICY_FILE} cannot be read as YAML: {error}") from None
    if not isinstance(data, CommentedMap):
        raise PolicyEditError(f"{POLICY_FILE} is not a mapping: is this a circle repository?")
    done = list(_apply(data, change))
    if not done:
        return Edited(text, (), None)
    _set_version(data, version, previous)
    writer = _Text()
    yaml.dump(data, writer)
    result = writer.text()
    if crlf:
        result = result.replace("\n", "\r\n")
    return Edited(result, tuple(done), read_back(result))


def read_back(text: str) -> Loaded[Circle]:
    """`text` as circle.yaml, through the strict parser and the checks of `circle validate`."""
    try:
        loaded = parse_document(text.encode(), POLICY_FILE, [KINDS["Circle"]])
    except DocumentError as error:
        first = error.problems[0]
        more = len(error.problems) - 1
        also = f" (and {more} more)" if more else ""
        raise PolicyEditError(
            f"the new {POLICY_FILE} would be invalid: line {first.mark.line}: {first.message}{also}"
        ) from None
    assert isinstance(loaded.document, Circle)
    return cast(Loaded[Circle], loaded)


def _apply(data: CommentedMap, change: Change) -> Iterator[str]:
    match change:
        case AddMember():
            yield from _add_member(data, change)
        case RemoveMember():
            yield from _remove_member(data, change)
        case RotateKey():
            yield from _rotate_key(data, change)
        case SetRule():
            yield from _set_rule(data, change)


# -- members -------------------------------------------------------------------------------------


def _members(data: CommentedMap) -> CommentedSeq:
    members = data.get("members")
    if not isinstance(members, CommentedSeq):
        raise PolicyEditError(f"{POLICY_FILE} has no block list of members to edit")
    return members


def _ids(members: Sequence[Any]) -> list[str]:
    return [str(m.get("id")) for m in members if isinstance(m, dict)]


def _index(members: CommentedSeq, member_id: str) -> int:
    for index, member in enumerate(members):
        if isinstance(member, dict) and member.get("id") == member_id:
            return index
    raise PolicyEditError(
        f"unknown member {member_id!r} (members: {', '.join(_ids(members)) or 'none'})"
    )


def _key_line(line: str, what: str) -> bytes:
    try:
        return member_key_blob(line)
    except ValueError as error:
        raise PolicyEditError(f"{what}: {error}") from None


def _key_type(line: str) -> str:
    """The `type` a member key of this public key line has in circle.yaml."""
    return MLDSA65 if line.lstrip().startswith(MLDSA65 + " ") else SSH_KEY


def _kind(key_type: str) -> str:
    return "ML-DSA" if key_type == MLDSA65 else "SSH"


def _owner(members: CommentedSeq, blob: bytes) -> str | None:
    """The member holding the key `blob` (SSH or ML-DSA), if any."""
    for member in members:
        for key in member.get("keys") or []:
            if isinstance(key, dict) and key.get("type") in (SSH_KEY, MLDSA65):
                try:
                    if member_key_blob(str(key.get("key"))) == blob:
                        return str(member.get("id"))
                except ValueError:
                    continue  # a broken key line: its own problem, reported by validation
    return None


def _check_new_key(members: CommentedSeq, blob: bytes, line: str) -> None:
    owner = _owner(members, blob)
    if owner is not None:
        raise PolicyEditError(
            f"key {key_fingerprint(line)} belongs to member {owner} already: a key may belong "
            "to one member only, and be listed once"
        )


def _add_member(data: CommentedMap, change: AddMember) -> Iterator[str]:
    members = _members(data)
    if change.member_id in _ids(members):
        raise PolicyEditError(
            f"member {change.member_id} exists already (to give them another key: "
            f"members rotate-key {change.member_id} --keep-old)"
        )
    blob = _key_line(change.key, f"member {change.member_id}")
    _check_new_key(members, blob, change.key)
    entry: dict[str, Any] = {"id": change.member_id}
    if change.weight is not None:
        entry["weight"] = change.weight
    entry["keys"] = [{"type": _key_type(change.key), "key": change.key}]
    try:
        Member.model_validate(entry)
    except ValidationError as error:
        raise PolicyEditError(f"member {change.member_id}: {_first_error(error)}") from None
    new = CommentedMap(entry)
    new["keys"] = CommentedSeq([CommentedMap(entry["keys"][0])])
    _insert(members, len(members), new)
    weight = change.weight if change.weight is not None else 1
    yield f"member {change.member_id} added (weight {weight}, key {key_fingerprint(change.key)})"


def _weights(members: CommentedSeq) -> dict[str, int]:
    found = {}
    for member in members:
        if isinstance(member, dict):
            weight = member.get("weight", 1)
            found[str(member.get("id"))] = weight if isinstance(weight, int) else 1
    return found


def _remove_member(data: CommentedMap, change: RemoveMember) -> Iterator[str]:
    members = _members(data)
    index = _index(members, change.member_id)
    gone = change.member_id
    if len(members) == 1:
        raise PolicyEditError(f"member {gone} is the last member: a circle needs at least one")
    weights = _weights(members)
    weights.pop(gone)
    rules = list(_rules(data))
    for rule in rules:
        name = rule.get("name")
        if gone in (rule.get("required") or []):
            raise PolicyEditError(
                f"rule {name} requires {gone}: first drop {gone} from its required members "
                f"(rules set {name} --required ... or --no-required)"
            )
        listed = rule.get("members")
        names = [m for m in listed if m != gone] if listed is not None else list(weights)
        held = sum(weights.get(str(m), 0) for m in set(names))
        threshold = rule.get("threshold")
        if isinstance(threshold, int) and threshold > held:
            fix = (
                f"rules set {name} --threshold {held}"
                if held
                else f"rules set {name} --members ... or --all-members"
            )
            who = ", ".join(sorted(set(map(str, names)))) or "nobody"
            raise PolicyEditError(
                f"removing {gone} leaves rule {name} unsatisfiable: it needs weight {threshold} "
                f"and its other members hold {held} ({who}); change the rule first: {fix}"
            )
    _remove(members, index, data, "members")
    yield f"member {gone} removed"
    for rule in rules:
        listed = rule.get("members")
        if isinstance(listed, CommentedSeq) and gone in listed:
            _remove(listed, listed.index(gone), rule, "members")
            yield f"rule {rule.get('name')}: {gone} no longer among its members"


def _keys_of(member: dict[str, Any], key_type: str) -> list[tuple[int, str]]:
    return [
        (index, str(key.get("key")))
        for index, key in enumerate(member.get("keys") or [])
        if isinstance(key, dict) and key.get("type") == key_type
    ]


def _fingerprint(line: str) -> str:
    try:
        return key_fingerprint(line)
    except ValueError:
        return "(unreadable key)"


def _old_key(member_id: str, keys: list[tuple[int, str]], old: str | None, kind: str) -> int | None:
    """The index (in the member's keys) of the key of that `kind` a rotation replaces."""
    if old is None:
        if len(keys) > 1:
            listed = ", ".join(_fingerprint(line) for _, line in keys)
            raise PolicyEditError(
                f"member {member_id} has {len(keys)} {kind} keys ({listed}): say which one goes "
                "with --old KEY.pub or its SHA256: fingerprint, or keep them all with --keep-old"
            )
        return keys[0][0] if keys else None
    if not old.startswith("SHA256:"):
        _key_line(old, "--old")
    wanted = old if old.startswith("SHA256:") else key_fingerprint(old)
    for index, line in keys:
        if _fingerprint(line) == wanted:
            return index
    listed = ", ".join(_fingerprint(line) for _, line in keys) or "none"
    raise PolicyEditError(f"member {member_id} has no key {wanted} (its {kind} keys: {listed})")


def _rotate_key(data: CommentedMap, change: RotateKey) -> Iterator[str]:
    members = _members(data)
    member = members[_index(members, change.member_id)]
    blob = _key_line(change.key, "the new key")
    new_print = key_fingerprint(change.key)
    key_type = _key_type(change.key)
    if _owner(members, blob) == change.member_id:
        raise PolicyEditError(f"member {change.member_id} already has key {new_print}")
    _check_new_key(members, blob, change.key)
    if change.keep_old and change.old is not None:
        raise PolicyEditError("--old names the key that goes: it cannot go with --keep-old")
    keys = member.get("keys")
    if not isinstance(keys, CommentedSeq):
        raise PolicyEditError(f"member {change.member_id} has no block list of keys to edit")
    same = _keys_of(member, key_type)
    kind = _kind(key_type)
    old = None if change.keep_old else _old_key(change.member_id, same, change.old, kind)
    if old is None:
        where = same[-1][0] + 1 if same else len(keys)
        _insert(keys, where, CommentedMap([("type", key_type), ("key", change.key)]))
        yield f"member {change.member_id}: key {new_print} added"
        return
    before = _fingerprint(str(keys[old].get("key")))
    keys[old]["key"] = change.key  # in place: the comments around the key stay
    yield f"member {change.member_id}: key {before} replaced by {new_print}"


# -- rules ---------------------------------------------------------------------------------------


def _rules(data: CommentedMap) -> CommentedSeq:
    consensus = data.get("consensus")
    rules = consensus.get("rules") if isinstance(consensus, dict) else None
    if not isinstance(rules, CommentedSeq):
        raise PolicyEditError(f"{POLICY_FILE} has no block list of consensus rules to edit")
    return rules


def _known(members: CommentedSeq, ids: Sequence[str], what: str) -> None:
    known = _ids(members)
    for member_id in ids:
        if member_id not in known:
            raise PolicyEditError(
                f"{what}: unknown member {member_id!r} (members: {', '.join(known)})"
            )


def _styled(values: Sequence[str], like: Any, *, quotes: bool = True) -> CommentedSeq:
    """A list of `values` written as `like` is: flow or block, with its scalars' quotes
    (unless not `quotes`: member ids never need them)."""
    first = like[0] if isinstance(like, list) and like and quotes else None
    quote: type[str] = str
    if isinstance(first, DoubleQuotedScalarString):
        quote = DoubleQuotedScalarString
    elif isinstance(first, SingleQuotedScalarString):
        quote = SingleQuotedScalarString
    seq = CommentedSeq([quote(value) for value in values])
    if isinstance(like, CommentedSeq) and like.fa.flow_style():
        seq.fa.set_flow_style()
    return seq


def _text(values: Sequence[Any]) -> str:
    return "[" + ", ".join(map(str, values)) + "]"


def _sample_paths(rules: CommentedSeq) -> Any:
    return next((r.get("paths") for r in rules if isinstance(r, dict) and "paths" in r), None)


def _set_rule(data: CommentedMap, change: SetRule) -> Iterator[str]:
    rules = _rules(data)
    members = _members(data)
    name = change.name
    if change.members is not None:
        if change.all_members:
            raise PolicyEditError("give --members or --all-members, not both")
        _known(members, change.members, f"rule {name} --members")
    if change.required:
        _known(members, change.required, f"rule {name} --required")
    rule = next((r for r in rules if isinstance(r, CommentedMap) and r.get("name") == name), None)
    if rule is None:
        yield from _add_rule(rules, change)
        return
    if change.paths is not None and list(rule.get("paths") or []) != list(change.paths):
        old = rule.get("paths")
        rule["paths"] = _styled(change.paths, old)
        yield f"rule {name}: paths {_text(old or [])} -> {_text(change.paths)}"
    if change.members is not None and rule.get("members") != list(change.members):
        old = rule.get("members")
        style = old or _sample_paths(rules)
        _put(rule, "members", _styled(change.members, style, quotes=bool(old)), "paths")
        shown = "all members" if old is None else _text(old)
        yield f"rule {name}: members {shown} -> {_text(change.members)}"
    if change.all_members and "members" in rule:
        yield f"rule {name}: members {_text(rule['members'])} -> all members"
        del rule["members"]
    if change.threshold is not None and rule.get("threshold") != change.threshold:
        yield f"rule {name}: threshold {rule.get('threshold')} -> {change.threshold}"
        _put(rule, "threshold", change.threshold, "members", "paths")
    if change.required is not None and list(rule.get("required") or []) != list(change.required):
        old = rule.get("required") or []
        if change.required:
            like = old or _sample_paths(rules)
            styled = _styled(change.required, like, quotes=bool(old))
            _put(rule, "required", styled, "threshold")
        else:
            del rule["required"]
        yield f"rule {name}: required {_text(old)} -> {_text(change.required)}"
    was = rule.get("signatures", CLASSIC)
    if change.signatures is not None and was != change.signatures:
        if change.signatures == CLASSIC:
            del rule["signatures"]  # the default, as circle.yaml says it before any change
        else:
            _put(rule, "signatures", change.signatures, "required", "threshold")
        yield f"rule {name}: signatures {was} -> {change.signatures}"


def _add_rule(rules: CommentedSeq, change: SetRule) -> Iterator[str]:
    if change.paths is None or change.threshold is None:
        names = ", ".join(str(r.get("name")) for r in rules if isinstance(r, dict))
        raise PolicyEditError(
            f"no rule {change.name} (rules: {names}): to add it, give --paths and --threshold"
        )
    like = _sample_paths(rules)
    rule = CommentedMap([("name", change.name), ("paths", _styled(change.paths, like))])
    if change.members is not None:
        rule["members"] = _styled(change.members, like, quotes=False)
    rule["threshold"] = change.threshold
    if change.required:
        rule["required"] = _styled(change.required, like, quotes=False)
    if change.signatures not in (None, CLASSIC):
        rule["signatures"] = change.signatures
    _insert(rules, len(rules), rule)
    members = "all members" if change.members is None else _text(change.members)
    yield (
        f"rule {change.name} added (threshold {change.threshold} of {members}, "
        f"paths {_text(change.paths)})"
    )


def _put(mapping: CommentedMap, key: str, value: Any, *after: str) -> None:
    """Set `key`, placed after the first of `after` present when it is new."""
    if key in mapping:
        mapping[key] = value
        return
    keys = list(mapping)
    anchor = next((keys.index(k) + 1 for k in after if k in keys), len(keys))
    # The comment lines after the entry before it introduce what follows: they follow `key`.
    tail = _take_tail(_end(mapping, keys[anchor - 1])) if anchor else ""
    mapping.insert(anchor, key, value)
    _give_tail(_last(value) or (mapping, key), tail)


def _set_version(data: CommentedMap, version: int, previous: str) -> None:
    _put(data, "version", version, "id", "kind")
    _put(data, "previous", previous, "version")


def _first_error(error: ValidationError) -> str:
    item = error.errors()[0]
    message = str(item["msg"]).removeprefix("Value error, ")
    field = ".".join(str(part) for part in item["loc"] if part != SSH_KEY)
    return f"{field}: {message}" if field else message


# -- ruamel's round trip: indentation, and comments that follow their items ----------------------

_KEY_ONLY = re.compile(r"^( *)[A-Za-z_][\w.-]*:[ \t]*(#.*)?$")


def _guess_indent(text: str) -> tuple[int, int, int]:
    """(mapping, sequence, offset) as ruamel's `indent` takes them, read off `text`: the first
    nested mapping and the first block list under a key (defaults: 2, 2, 0)."""
    mapping: int | None = None
    sequence: tuple[int, int] | None = None
    lines = [line for line in text.splitlines() if line.strip() and line.lstrip()[0] != "#"]
    for line, following in itertools.pairwise(lines):
        found = _KEY_ONLY.match(line)
        if found is None:
            continue
        depth = len(found.group(1))
        inner = len(following) - len(following.lstrip(" "))
        if following.lstrip().startswith("- ") and inner >= depth:
            sequence = sequence or (inner - depth + 2, inner - depth)
        elif inner > depth:
            mapping = mapping or inner - depth
    seq, offset = sequence or (2, 0)
    return mapping or 2, seq, offset


def _yaml(text: str) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long lines such as public keys
    mapping, sequence, offset = _guess_indent(text)
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml


class _Text:
    """A stream ruamel.yaml writes into: the text, without any I/O."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, data: str | bytes) -> None:
        self.parts.append(data.decode("utf-8") if isinstance(data, bytes) else data)

    def text(self) -> str:
        return "".join(self.parts)


Place = tuple[Any, Any]  # a container and a key (or index) in it


def _block(node: Any) -> bool:
    return (
        isinstance(node, CommentedMap | CommentedSeq)
        and bool(len(node))
        and not (node.fa.flow_style())
    )


def _end(container: Any, key: Any) -> Place:
    """The last scalar (or flow collection) of the entry `key` of `container`: where ruamel
    keeps the comment lines that follow the entry."""
    while _block(container[key]):
        container = container[key]
        key = list(container)[-1] if isinstance(container, CommentedMap) else len(container) - 1
    return container, key


def _last(node: Any) -> Place | None:
    """Where the comment lines after a block node are kept (None: an empty or flow node)."""
    if not _block(node):
        return None
    return _end(node, list(node)[-1] if isinstance(node, CommentedMap) else len(node) - 1)


def _slot(container: Any) -> int:
    return 2 if isinstance(container, CommentedMap) else 0


def _take_tail(place: Place | None) -> str:
    """Detach and return the comment lines after the line at `place` (its own end-of-line
    comment stays)."""
    if place is None:
        return ""
    container, key = place
    entry = container.ca.items.get(key)
    token = entry[_slot(container)] if entry else None
    if token is None:
        return ""
    head, _, tail = str(token.value).partition("\n")
    if head:
        token.value = head + "\n"
    else:
        entry[_slot(container)] = None
    return tail


def _give_tail(place: Place | None, tail: str) -> None:
    """Put comment lines `tail` after the line at `place`."""
    if not tail or place is None:
        return
    container, key = place
    entry = container.ca.items.setdefault(key, [None, None, None, None])
    slot = _slot(container)
    token = entry[slot]
    if token is None:
        entry[slot] = CommentToken("\n" + tail, CommentMark(0), None)
    else:
        head = str(token.value).partition("\n")[0]
        token.value = f"{head}\n{tail}"


def _insert(seq: CommentedSeq, index: int, item: Any) -> None:
    """Insert `item` at `index`; the comment lines that followed the item before it (they
    introduce what came next, or close the list) now follow `item`."""
    tail = _take_tail(_end(seq, index - 1)) if index > 0 else ""
    seq.insert(index, item)
    _give_tail(_last(item) or (seq, index), tail)


def _remove(seq: CommentedSeq, index: int, parent: CommentedMap, key: str) -> None:
    """Remove item `index` with its comments and the comment lines just above it."""
    tail = _take_tail(_end(seq, index))
    if index > 0:
        _take_tail(_end(seq, index - 1))  # the lines introducing the removed item
        del seq[index]
        _give_tail(_end(seq, index - 1), tail)
        return
    del seq[index]
    if tail.strip() and len(seq):
        # The lines introducing the next item: now the first, after the list's own comment.
        before = parent.ca.items.setdefault(key, [None, None, None, None])
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        column = len(tail.lstrip("\n")) - len(tail.lstrip("\n").lstrip(" "))
        tokens = before[3] or []
        tokens.append(CommentToken("\n".join(lines) + "\n", CommentMark(column), None))
        before[3] = tokens
        seq.ca.comment = [None, tokens]
