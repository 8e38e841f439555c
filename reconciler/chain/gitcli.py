"""The `git` command, for what moves between repositories: fetch, push and fast-forwards.

Transports (ssh with the user's agent and config, https with credential helpers, local paths)
are git's, exactly as the user has set them up; everything read afterwards is read with pygit2
and verified. No prompt ever blocks: GIT_TERMINAL_PROMPT=0.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from reconciler.errors import InputError, Retry

TIMEOUT = 600


class GitFailed(InputError):
    """A git command failed; the message is git's own last line. A remote or the network, most
    often: worth retrying."""

    retry = Retry.TRANSIENT

    def __init__(self, message: str, stderr: str) -> None:
        super().__init__(message)
        self.stderr = stderr


def git(folder: Path | str, *arguments: str, isolated: bool = False) -> str:
    """Run `git -C folder ARGUMENTS`; its stdout, or GitFailed with what git said.

    `isolated` (a node's quarantine): no hook runs, and neither the system's nor the user's Git
    configuration nor GIT_* variables of the environment are read."""
    executable = shutil.which("git")
    if executable is None:
        raise InputError("git is not installed (apt-get install git)")
    environment = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    options: list[str] = []
    if isolated:
        environment = {k: v for k, v in environment.items() if not k.startswith("GIT_")}
        environment |= {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
        }
        options = ["-c", f"core.hooksPath={os.devnull}"]
    try:
        done = subprocess.run(
            [executable, *options, "-C", str(folder), *arguments],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=environment,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise GitFailed(f"git {arguments[0]} took over {TIMEOUT} s", "") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
        said = (fatal or lines or [f"exit status {done.returncode}"])[0]
        said = said.removeprefix("fatal: ").removeprefix("error: ")
        raise GitFailed(f"git {arguments[0]}: {said}", done.stderr)
    return done.stdout


def as_remote(remote: str) -> str:
    """A remote as the user typed it, for a git running elsewhere: a local path becomes
    absolute (relative to the caller's folder); names and URLs stay. One that starts with `-`
    would be an option to git: refused."""
    if remote.startswith("-"):
        raise InputError(f"{remote[:60]!r}: a remote cannot start with '-' (write ./{remote})")
    return str(Path(remote).resolve()) if Path(remote).exists() else remote
