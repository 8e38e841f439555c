"""A sealed secret in a whole local circle, end to end: `circle up` of the example makes a new
API key, writes it 0600 for the owners and seals it to the demo nodes at genesis; each langid
replica reads it from its sandbox and answers its admin endpoint (GET /v1/usage) with it and
never without it or with another; every release is a SecretReleased event, in the store as
`circle events` shows it and on the dashboard's /api/events, naming secret, workload, digest,
node and commit; the file in a replica's tmpfs is 0400 and its own, and a process outside the
sandbox under another uid cannot read it; and the key is in no file of the circle's folder
(repository objects, store, logs, node folders) and no event, byte for byte.

That no other workload, artifact or node gets the value is `tests/reconciler/node/
test_secret_release.py`'s; this is the example, as a person brings it up."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pygit2
import pytest

from tests import output_shapes
from tests.conftest import run_circle_process
from tests.reconciler.local.test_circle_up import assignments, events, up
from tests.reconciler.node.runtime_world import needs_sandbox

pytestmark = pytest.mark.slow

SECRET = "langid-api-key"
NOBODY = 65534
OUTSIDER_PYTHON = "/usr/bin/python3"
READ_THROUGH_FD = """\
import os, sys
try:
    fd = os.open(sys.argv[2], os.O_RDONLY, dir_fd=int(sys.argv[1]))
    print("read", len(os.read(fd, 4096)))
except OSError as error:
    print("refused", type(error).__name__)
"""
# A proxy from the environment must never see loopback test traffic.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def usage(endpoint: str, key: bytes | None) -> tuple[int, Any]:
    headers = {} if key is None else {"Authorization": f"Bearer {key.decode()}"}
    request = urllib.request.Request(f"http://{endpoint}/v1/usage", headers=headers)
    try:
        with _OPENER.open(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def predict(endpoint: str, text: str) -> str:
    request = urllib.request.Request(
        f"http://{endpoint}/v1/predict",
        data=json.dumps({"text": text}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with _OPENER.open(request, timeout=10) as answer:
        return str(json.loads(answer.read())["language"])


def made_digest(site: Path) -> str:
    """The artifact the demo repository pins for langid."""
    text = (site / "circle" / "workloads" / "langid.yaml").read_text()
    found = re.search(r"digest: (sha256:[0-9a-f]{64})", text)
    assert found is not None
    return found.group(1)


def dashboard_events(site: Path) -> list[dict[str, Any]]:
    """The events on `circle dashboard`'s /api/events, once it has read the circle."""
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "dashboard", "--dir", str(site), "--port", "0",
         "-o", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 60)
        assert ready, "the dashboard did not say where it listens within 60 s"
        line = process.stdout.readline()
        output_shapes.check(["dashboard", "-o", "json"], 0, line)
        with _OPENER.open(json.loads(line)["url"].rstrip("/") + "/api/events", timeout=10) as got:
            body = json.loads(got.read())
        return list(body["events"])
    finally:
        process.terminate()
        process.wait(timeout=15)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def files_holding(root: Path, value: bytes, allowed: set[Path]) -> list[Path]:
    """Every regular file under `root` (but `allowed`) whose bytes hold `value`, and every
    object of the repository there, read whole (Git compresses them on disk)."""
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path in allowed or path.is_symlink() or not path.is_file():
                continue
            if value in path.read_bytes():
                found.append(path)
    repo = pygit2.Repository(str(root / "circle"))
    found += [Path(f"git:{oid}") for oid in repo.odb if value in repo.odb.read(oid)[1]]
    return found


def test_the_example_service_gets_its_sealed_api_key_and_nothing_else_reads_it(
    tmp_path: Path,
) -> None:
    needs_sandbox()
    site = tmp_path / "up"
    try:
        done = up(site, "-o", "json")
        assert done.code == 0, done.stderr
        made = done.json()
        assert made["converged"] is True
        key_file = Path(made["secrets"][SECRET])
        assert key_file == site / "keys" / "owners" / f"{SECRET}.secret"
        info = key_file.stat()
        assert (info.st_mode & 0o777, info.st_uid) == (0o600, os.geteuid())
        key = key_file.read_bytes()
        assert re.fullmatch(rb"[0-9a-f]{64}", key)

        # Sealed at genesis to the demo nodes' KEM keys: the repository holds no byte of it.
        sealed = (site / "circle" / "secrets" / f"{SECRET}.yaml").read_text()
        assert "Sealed by circle up to nodes node-a, node-b, node-c" in sealed
        assert key.decode() not in sealed

        # Each replica answers its admin endpoint with the key, and only with it.
        (langid,) = made["workloads"]
        endpoints = [e.split("=", 1)[1] for e in langid["endpoints"]]
        assert len(endpoints) == 2
        for endpoint in endpoints:
            assert predict(endpoint, "Le chien et le chat dorment dans la maison.") == "fr"
            assert usage(endpoint, key) == (200, {"predictions": {"fr": 1}, "total": 1})
            refused = {"error": "/v1/usage needs the API key: Authorization: Bearer KEY"}
            assert usage(endpoint, None) == (401, refused)
            assert usage(endpoint, key[:-1] + (b"0" if key[-1:] != b"0" else b"1")) == (
                401,
                refused,
            )

        # Every release is an event, in the store and on the dashboard, one per start.
        placed = [row for row in assignments(site) if row["workload"] == "langid"]
        assert sorted(row["phase"] for row in placed) == ["Ready", "Ready"]
        said = events(site)
        releases = [e for e in said if e["reason"] == "SecretReleased"]
        starts = Counter((e["object"], e["node"]) for e in said if e["reason"] == "Started")
        assert Counter((e["object"], e["node"]) for e in releases) == starts
        assert {(f"assignment/langid/{row['slot']}", row["node"]) for row in placed} <= set(starts)
        (digest,) = {row["digest"] for row in placed}
        (commit,) = {row["commit"] for row in placed}
        assert digest == made_digest(site)
        for event in releases:
            assert event["message"] == (
                f"secret {SECRET} to workload langid running {digest} on node {event['node']}, "
                f"commit {commit}"
            )
            assert event["commit"] == commit
        shown = [e for e in dashboard_events(site) if e["reason"] == "SecretReleased"]
        assert sorted(json.dumps(e, sort_keys=True) for e in shown) == sorted(
            json.dumps(e, sort_keys=True) for e in releases
        )

        # In a replica's tmpfs: 0400 and its own; another uid outside the sandbox cannot read.
        row = placed[0]
        secret_file = (
            site / "nodes" / row["node"] / "secrets" / "langid" / str(row["slot"]) / SECRET
        )
        uid_said = next(
            e["message"] for e in said
            if e["reason"] == "Started" and e["object"] == f"assignment/langid/{row['slot']}"
            and e["node"] == row["node"]
        )  # fmt: skip
        found_uid = re.search(r" as uid (\d+) ", uid_said)
        assert found_uid is not None
        uid = int(found_uid.group(1))
        info = secret_file.stat()
        assert (info.st_mode & 0o777, info.st_uid) == (0o400, uid)
        assert uid not in (0, NOBODY)
        # Handed the tmpfs itself (so the folders above it do not stand in the way), it is
        # still refused: the tmpfs is 0500 and the file 0400, both the replica's.
        folder = os.open(secret_file.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            outsider = subprocess.run(
                [OUTSIDER_PYTHON, "-I", "-S", "-c", READ_THROUGH_FD, str(folder), SECRET],
                user=NOBODY, group=NOBODY, extra_groups=[], pass_fds=[folder],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
        finally:
            os.close(folder)
        assert (outsider.returncode, outsider.stdout) == (0, "refused PermissionError\n")
        assert key.decode() not in outsider.stderr

        # The help it prints says how to call the admin endpoint with the owners' key.
        again = up(site)
        assert again.code == 0, again.stderr
        assert f'curl -s -H "Authorization: Bearer $(cat {key_file})" http://' in again.stdout
        assert "/v1/usage" in again.stdout
        assert key.decode() not in again.stdout + again.stderr

        # Stopped (the tmpfs go with the replicas), the key is nowhere in the circle's folder
        # but the owners' file: not in the repository, the store, the logs, a node's folder.
        stopped = run_circle_process("down", "--dir", str(site))
        assert stopped.code == 0, stopped.stderr
        assert not secret_file.exists()
        assert files_holding(site, key, {key_file}) == []
        assert all(key.decode() not in json.dumps(e) for e in events(site))
    finally:
        down = run_circle_process("down", "--dir", str(site), "--purge")
    assert down.code == 0, down.stderr
    assert not site.exists()
