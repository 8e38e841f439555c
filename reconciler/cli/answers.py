"""The answers `circle log`, `verify` and `review` gave, kept so the same question answers at once.

On a long chain the verified-head cache (`reconciler.chain.headcache`) makes the walk itself
cheap, but a command still pays for Python, pygit2 and the document models (about 0.3 s)
before it can say what it said a minute ago. An answer depends on nothing but:

- the question: the command, its revision, output mode, sigstore trust root and introduction;
- the repository's refs it reads: main, the approvals ref and, for HEAD, what HEAD names
  (read here from the Git folder's files, without pygit2; objects are addressed by content);
- the clock, only at instants the approvals of the next step name: an approval counts from
  its `issuedAt` until its `expiresAt` (`reconciler.chain.verify`), so an answer holds while
  `now` stays between the two such instants around the moment it was given;
- the code that gave it (the version and every module's size and mtime).

So `.git/circle/answers.json` keeps the last answers (stdout and exit code) with that key and
window, each with its sha256. Any doubt (a ref layout this reader does not know: worktrees,
shallow clones, grafts, symbolic refs beyond HEAD, reftable; a damaged file; a checksum that
does not match; refs that moved while the answer was made) means no replay: the command runs
as it always did, and a replayed answer is byte for byte the one it would print. Errors are
never kept (they are cheap, and they go to stderr). Like the head cache, the file is as trusted
as the Git folder it sits in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import reconciler

FORMAT = "circle-answers/1"
NAME = "circle/answers.json"
MAX_BYTES = 16 << 20
KEEP = 16  # answers kept: a few commands, revisions and output modes of one clone
MAIN = "refs/heads/main"
APPROVALS = "refs/circle/approvals"
_OID = re.compile(rb"[0-9a-f]{40}")
_REF = re.compile(rb"refs/[A-Za-z0-9._/-]{1,200}")
_UNKNOWN_LAYOUT = ("commondir", "shallow", "info/grafts", "reftable")


@dataclass(frozen=True)
class Question:
    """What an answer depends on, as one canonical text, and the Git folder it lives in."""

    repo: Path
    command: str
    parameters: dict[str, str | None]
    git_dir: Path
    text: str


@dataclass(frozen=True)
class Window:
    """The instants an answer given at `now` holds between: [start, end), None unbounded."""

    start: int | None
    end: int | None

    def holds(self, now: int) -> bool:
        return (self.start is None or self.start <= now) and (self.end is None or now < self.end)


def window(instants: Iterable[int], now: int) -> Window:
    """The window around `now` that the clock instants `instants` (the `issuedAt` and
    `expiresAt` of every approval that could still count) leave unchanged. Pure."""
    seen = set(instants)
    before = [instant for instant in seen if instant <= now]
    after = [instant for instant in seen if instant > now]
    return Window(max(before) if before else None, min(after) if after else None)


def question(repo: Path, command: str, **parameters: str | None) -> Question | None:
    """The question `command` with `parameters` asks of the circle repository at `repo`, or
    None when this reader cannot be sure what the answer depends on."""
    try:
        git_dir = _git_dir(repo)
        if git_dir is None:
            return None
        head = _read(git_dir / "HEAD", 512).strip()
        refs = {
            "head": head.decode("ascii"),
            "headCommit": _resolve(git_dir, head),
            "main": _ref(git_dir, MAIN.encode()),
            "approvals": _ref(git_dir, APPROVALS.encode()),
        }
        if refs["headCommit"] is None and parameters.get("revision") == "HEAD":
            return None
        if parameters.get("revision") not in ("HEAD", None) and not _OID.fullmatch(
            str(parameters["revision"]).encode()
        ):
            return None  # a branch, tag or short name: git's lookup rules are not repeated here
        document = {
            "format": FORMAT,
            "code": _code_stamp(),
            "command": command,
            "parameters": parameters,
            "refs": refs,
        }
        text = json.dumps(document, sort_keys=True, separators=(",", ":"))
        return Question(repo, command, parameters, git_dir, text)
    except (OSError, ValueError):
        return None


def ask(
    repo: Path, command: str, now: int, *, trust: str, introduction: Path | None, **parameters: str
) -> tuple[Question | None, int | None]:
    """The question an owner command asks (with its sigstore trust label and introduction
    file) and, when it was answered before, the exit code of the answer just replayed."""
    asked = question(
        repo, command, trust=trust, introduction=file_digest(introduction), **parameters
    )
    return asked, replay(asked, now)


def file_digest(path: Path | None) -> str | None:
    """The sha256 of a small file a question names (an introduction), 'none' without one."""
    if path is None:
        return "none"
    try:
        return hashlib.sha256(_read(path, 1 << 16)).hexdigest()
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class _Kept:
    question: str
    held: Window
    stdout: str
    code: int

    def as_json(self) -> dict[str, object]:
        fields: dict[str, object] = {
            "question": self.question,
            "start": self.held.start,
            "end": self.held.end,
            "stdout": self.stdout,
            "code": self.code,
        }
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
        return {**fields, "sha256": digest}


def replay(asked: Question | None, now: int) -> int | None:
    """Print the kept answer to `asked` and give its exit code, or None to answer afresh."""
    if asked is None:
        return None
    for kept in _kept(asked.git_dir):
        if kept.question == asked.text and kept.held.holds(now):
            sys.stdout.write(kept.stdout)
            sys.stdout.flush()
            return kept.code
    return None


def answer(asked: Question | None, text: str, code: int, held: Window) -> int:
    """Print `text` (the command's whole stdout), keep it as the answer to `asked` if the refs
    did not move while it was made, and give `code`."""
    sys.stdout.write(text)
    sys.stdout.flush()
    if asked is None:
        return code
    again = question(asked.repo, asked.command, **asked.parameters)
    if again is None or again.text != asked.text:
        return code  # something moved under the answer: do not keep it
    others = [kept for kept in _kept(asked.git_dir) if kept.question != asked.text]
    entries = [
        kept.as_json() for kept in [*others[-(KEEP - 1) :], _Kept(asked.text, held, text, code)]
    ]
    data = json.dumps({"format": FORMAT, "answers": entries}, separators=(",", ":"))
    if len(data) <= MAX_BYTES:
        from qss.durable import write_atomically  # only when keeping: a replay writes nothing

        path = asked.git_dir / NAME
        with contextlib.suppress(OSError):  # a read-only clone answers afresh every time
            path.parent.mkdir(mode=0o700, exist_ok=True)
            write_atomically(path, data, mode=0o600)
    return code


def _kept(git_dir: Path) -> list[_Kept]:
    """The kept answers whose checksum holds; nothing for a missing or damaged file."""
    try:
        document = json.loads(_read(git_dir / NAME, MAX_BYTES))
        if document["format"] != FORMAT:
            return []
        found = []
        for entry in document["answers"]:
            question, start, end = entry["question"], entry["start"], entry["end"]
            stdout, code = entry["stdout"], entry["code"]
            if not (
                isinstance(question, str)
                and isinstance(stdout, str)
                and type(code) is int
                and all(bound is None or type(bound) is int for bound in (start, end))
            ):
                continue
            kept = _Kept(question, Window(start, end), stdout, code)
            if kept.as_json() == entry:
                found.append(kept)
        return found
    except (OSError, ValueError, KeyError, TypeError):
        return []


# -- the Git folder's refs, read as files ------------------------------------------------------


def _git_dir(repo: Path) -> Path | None:
    """`repo/.git` of a plain clone, or `repo` itself when it is a bare repository."""
    dot_git = repo / ".git"
    if dot_git.is_dir() and not dot_git.is_symlink():
        git_dir = dot_git
    elif (repo / "HEAD").is_file() and (repo / "objects").is_dir() and (repo / "refs").is_dir():
        git_dir = repo
    else:
        return None  # a worktree's .git file, a folder below the top, or no repository
    if any(os.path.lexists(git_dir / name) for name in _UNKNOWN_LAYOUT):
        return None
    return git_dir.resolve()


def _resolve(git_dir: Path, head: bytes) -> str | None:
    """The commit HEAD's text names: a ref (one level: `ref: refs/heads/X`) or an oid."""
    if head.startswith(b"ref: "):
        return _ref(git_dir, head[5:])
    if _OID.fullmatch(head):
        return head.decode()
    raise ValueError("HEAD names neither a ref nor an object")


def _ref(git_dir: Path, name: bytes) -> str | None:
    """The oid ref `name` holds: its loose file, else its line in packed-refs, else None."""
    if not _REF.fullmatch(name) or b".." in name:
        raise ValueError("an unusual ref name")
    try:
        loose = _read(git_dir / name.decode(), 512).strip()
    except FileNotFoundError:
        loose = None
    if loose is not None:
        if not _OID.fullmatch(loose):
            raise ValueError("a symbolic or unusual loose ref")
        return loose.decode()
    try:
        packed = _read(git_dir / "packed-refs", MAX_BYTES)
    except FileNotFoundError:
        return None
    for line in packed.splitlines():
        oid, _, ref = line.partition(b" ")
        if ref == name:
            if not _OID.fullmatch(oid):
                raise ValueError("an unusual packed ref")
            return oid.decode()
    return None


def _read(path: Path, limit: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"{path}: larger than {limit} bytes")
    return data


def _code_stamp() -> str:
    """The version, and every module's name, size and mtime: a changed or upgraded program
    never replays an older program's answer."""
    digest = hashlib.sha256(reconciler.__version__.encode())
    for package in ("reconciler", "builders", "qss"):
        root = Path(reconciler.__file__).parent.parent / package
        for folder, subfolders, files in os.walk(root):
            subfolders[:] = sorted(s for s in subfolders if s != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    status = os.stat(os.path.join(folder, name))
                    digest.update(
                        f"{folder}/{name} {status.st_size} {status.st_mtime_ns}\n".encode()
                    )
    return digest.hexdigest()
