"""The runtime on real sandboxes: a replica starts, is restarted with backoff when it ends, is
checked and restarted when unhealthy, is stopped gracefully, survives an agent restart, and
never starts from a changed artifact (one flipped bit is refused, repaired, restarted)."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path

import pytest

from reconciler.node.records import Phase
from reconciler.node.replica import ReplicaPaths
from tests.reconciler.node.runtime_world import (
    RuntimeWorld,
    make_runtime,
    needs_sandbox,
    runtime_world,
)

SLEEPER = """\
import os, signal, sys, time
def bye(*_):
    print("bye", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("up", os.getpid(), os.getuid(), flush=True)
while True:
    time.sleep(1)
"""

STUBBORN = """\
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("up", flush=True)
while True:
    time.sleep(1)
"""

SERVER = """\
import http.server, os, sys
healthy = os.path.join(os.environ["HOME"], "sick")
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/sicken":
            open(healthy, "w").close()
        ok = not os.path.exists(healthy)
        self.send_response(200 if ok else 503)
        self.end_headers()
        self.wfile.write(b"ok" if ok else b"sick")
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("0.0.0.0", 8080), Handler)
print("serving", flush=True)
server.serve_forever()
"""


@pytest.fixture(autouse=True)
def _sandboxes() -> None:
    needs_sandbox()


def workload_pid(world: RuntimeWorld, name: str, marker: str) -> int | None:
    """The host pid of the workload's own process (not bubblewrap's); None between runs."""
    for pid in world.pids(name):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in command and b"bwrap" not in command:
            return pid
    return None


def test_a_replica_runs_in_its_sandbox_and_stops_gracefully(tmp_path: Path) -> None:
    with runtime_world(tmp_path) as world:
        digest = world.artifact({"main.py": SLEEPER})
        world.run("sleeper", digest, ["python3", "/artifact/main.py"])
        status = world.wait_status("sleeper", phase=Phase.READY)
        assert (status.reason, status.restarts) == ("Ready", 0)
        world.wait(lambda: "up" in world.log_text("sleeper"), what="its first line")
        uid = int(world.log_text("sleeper").split()[2])
        assert uid >= 430_000  # its own uid from the agent's range, never root
        assert json.loads((world.state / "uids.json").read_text())["workloads"] == {"sleeper": uid}
        work = world.state / "work" / "sleeper" / "0"
        assert (work.stat().st_uid, work.stat().st_mode & 0o777) == (uid, 0o700)

        world.remove("sleeper")
        world.wait(lambda: world.status("sleeper") is None, what="the replica gone")
        assert "bye" in world.log_text("sleeper")  # SIGTERM reached it; it ended itself
        ended = json.loads(ReplicaPaths.of(world.state, "sleeper", 0).exit.read_text())
        assert (ended["exitCode"], ended["signal"]) == (0, None)
        assert not work.exists()
        assert world.pids("sleeper") == set()
        assert world.reasons() == ["Started", "Killing"]


def test_a_replica_that_ignores_sigterm_is_killed_after_the_grace_period(
    tmp_path: Path,
) -> None:
    with runtime_world(tmp_path, grace=0.5) as world:
        digest = world.artifact({"main.py": STUBBORN})
        world.run("stubborn", digest, ["python3", "/artifact/main.py"])
        world.wait_status("stubborn", phase=Phase.READY)
        world.wait(lambda: "up" in world.log_text("stubborn"))
        world.remove("stubborn")
        world.wait(lambda: world.status("stubborn") is None)
        ended = json.loads(ReplicaPaths.of(world.state, "stubborn", 0).exit.read_text())
        assert (ended["exitCode"], ended["signal"]) == (None, signal.SIGKILL)  # the whole group
        assert world.pids("stubborn") == set()


def test_a_replica_that_keeps_crashing_backs_off(tmp_path: Path) -> None:
    with runtime_world(tmp_path) as world:
        digest = world.artifact({"main.py": "print('crash', flush=True)\nraise SystemExit(3)\n"})
        world.run("crasher", digest, ["python3", "/artifact/main.py"])
        status = world.wait_status("crasher", reason="CrashLoopBackOff", seconds=30)
        assert status.phase is Phase.FAILED
        assert "exited with code 3" in status.message
        assert status.restarts >= 1
        said = [e for e in world.said() if e.reason == "Exited"]
        assert len(said) >= 2
        # the first restart is immediate, the second waits a second: 0 s, then 1 s, 2 s ...
        assert "restart in 0 s" in said[0].message
        assert "restart in 1 s" in said[1].message
        assert world.log_text("crasher").count("crash") >= 2


def test_an_oom_killed_replica_is_reported_as_such(tmp_path: Path) -> None:
    with runtime_world(tmp_path) as world:
        hog = "x = bytearray(256 * 1024 * 1024)\nprint('survived', flush=True)\n"
        digest = world.artifact({"main.py": hog})
        world.run("hog", digest, ["python3", "/artifact/main.py"], memory=64 * 1024 * 1024)
        world.wait(lambda: "OOMKilled" in world.reasons(), what="an OOMKilled event")
        event = next(e for e in world.said() if e.reason == "OOMKilled")
        assert "over its memory limit" in event.message
        assert "survived" not in world.log_text("hog")


def test_a_flipped_bit_in_a_running_artifact_is_caught_repaired_and_restarted(
    tmp_path: Path,
) -> None:
    with runtime_world(tmp_path, check_interval=0.2) as world:
        digest = world.artifact({"main.py": SLEEPER})
        world.run("sleeper", digest, ["python3", "/artifact/main.py"])
        world.wait_status("sleeper", phase=Phase.READY)
        world.wait(lambda: "up" in world.log_text("sleeper"), what="its SIGTERM handler")
        first = workload_pid(world, "sleeper", "/artifact/main.py")
        assert first is not None
        installed = world.state / "artifacts" / digest.removeprefix("sha256:") / "main.py"
        original = installed.read_bytes()
        flipped = bytearray(original)
        flipped[7] ^= 0x01
        os.chmod(installed, 0o644)
        with open(installed, "r+b") as handle:  # same size; mtime may be set back by root
            handle.write(flipped)
        stat = installed.stat()
        os.utime(installed, ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**9))

        world.wait(lambda: "ArtifactTampered" in world.reasons(), what="ArtifactTampered")
        world.wait(
            lambda: (
                world.status("sleeper") is not None
                and world.status("sleeper").phase is Phase.READY  # type: ignore[union-attr]
                and workload_pid(world, "sleeper", "/artifact/main.py") not in (None, first)
            ),
            what="a restart from the repaired artifact",
        )
        assert installed.read_bytes() == original  # rebuilt from verified chunks
        tampered = next(e for e in world.said() if e.reason == "ArtifactTampered")
        assert "main.py" in tampered.message


def test_a_flipped_bit_before_a_start_refuses_that_start_and_repairs(tmp_path: Path) -> None:
    with runtime_world(tmp_path) as world:
        digest = world.artifact({"main.py": "print('ran', flush=True)\nraise SystemExit(0)\n"})
        world.runtime.artifacts.ensure(digest)  # installed before any start
        installed = world.state / "artifacts" / digest.removeprefix("sha256:") / "main.py"
        data = bytearray(installed.read_bytes())
        data[0] ^= 0x80
        installed.write_bytes(bytes(data))
        world.run("once", digest, ["python3", "/artifact/main.py"])
        world.wait(lambda: "ran" in world.log_text("once"), what="a run from the good copy")
        reasons = world.reasons()
        assert reasons.index("ArtifactTampered") < reasons.index("Started")
        assert installed.read_bytes()[0] == ord("p")


def test_an_unavailable_artifact_is_said_and_retried_until_it_comes(tmp_path: Path) -> None:
    with runtime_world(tmp_path) as world:
        missing = "sha256:" + "ab" * 32
        world.run("later", missing, ["python3", "/artifact/main.py"])
        status = world.wait_status("later", reason="ArtifactUnavailable")
        assert status.phase is Phase.PENDING
        assert "no source has the manifest of sha256:abababab" in status.message
        assert world.pids("later") == set()


def test_health_checks_gate_readiness_and_restart_an_unhealthy_replica(tmp_path: Path) -> None:
    with runtime_world(tmp_path) as world:
        digest = world.artifact({"main.py": SERVER})
        world.run(
            "web", digest, ["python3", "/artifact/main.py"],
            ports=[{"name": "http", "port": 8080}],
            health={"http": {"path": "/healthz", "port": 8080}, "interval": "1s",
                    "timeout": "1s", "failureThreshold": 2},
        )  # fmt: skip
        status = world.wait_status("web", phase=Phase.READY)
        assert status.message == "GET /healthz: 200"
        (endpoint,) = status.endpoints
        name, address = endpoint.split("=")
        assert name == "http"
        with urllib.request.urlopen(f"http://{address}/hello", timeout=5) as answer:
            assert answer.read() == b"ok"  # the declared port, published by the agent
        first = workload_pid(world, "web", "/artifact/main.py")
        assert first is not None

        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://{address}/sicken", timeout=5)
        world.wait(lambda: "Unhealthy" in world.reasons(), what="Unhealthy", seconds=30)
        unhealthy = next(e for e in world.said() if e.reason == "Unhealthy")
        assert "HTTP 503" in unhealthy.message
        assert "2 failures in a row; restarting" in unhealthy.message
        # the work folder survives a restart (the marker file), so it stays sick: not Ready
        world.wait(
            lambda: workload_pid(world, "web", "/artifact/main.py") not in (None, first),
            what="a restart",
        )
        status = world.wait_status("web", phase=Phase.RUNNING)
        assert status.restarts >= 1


def test_a_command_check_runs_inside_the_sandbox_as_the_workload(tmp_path: Path) -> None:
    with runtime_world(tmp_path) as world:
        digest = world.artifact({"main.py": SLEEPER})
        check = "import os, sys; sys.exit(0 if os.getuid() >= 430000 and os.getcwd() == '/work'"
        check += " and os.path.exists('/artifact/main.py') else 1)"
        world.run(
            "checked", digest, ["python3", "/artifact/main.py"],
            health={"command": ["python3", "-c", check], "interval": "1s", "timeout": "5s"},
        )  # fmt: skip
        status = world.wait_status("checked", phase=Phase.READY)
        assert status.message == "the check command passed"


def test_a_restarted_agent_adopts_its_running_replicas(tmp_path: Path) -> None:
    with runtime_world(tmp_path) as world:
        digest = world.artifact({"main.py": SLEEPER})
        work = world.run("sleeper", digest, ["python3", "/artifact/main.py"])
        world.wait_status("sleeper", phase=Phase.READY)
        world.wait(lambda: "up" in world.log_text("sleeper"), what="its SIGTERM handler")
        pid = workload_pid(world, "sleeper", "/artifact/main.py")
        assert pid is not None
        world.runtime.close(stop=False)  # the agent goes away; the replica runs on
        assert workload_pid(world, "sleeper", "/artifact/main.py") == pid

        world.runtime = make_runtime(world.state, world.source, world.cgroup_parent)
        assert world.runtime.adopt() == 1
        world.runtime.sync({("sleeper", 0): work})
        world.wait_status("sleeper", phase=Phase.READY)
        assert workload_pid(world, "sleeper", "/artifact/main.py") == pid  # not restarted
        assert "Adopted" in world.reasons()
        assert "bye" not in world.log_text("sleeper")


def test_a_restarted_agent_replaces_an_adopted_replica_of_another_version(
    tmp_path: Path,
) -> None:
    with runtime_world(tmp_path) as world:
        old = world.artifact({"main.py": SLEEPER})
        world.run("sleeper", old, ["python3", "/artifact/main.py"])
        world.wait_status("sleeper", phase=Phase.READY)
        world.wait(lambda: "up" in world.log_text("sleeper"), what="its SIGTERM handler")
        pid = workload_pid(world, "sleeper", "/artifact/main.py")
        world.runtime.close(stop=False)

        world.runtime = make_runtime(world.state, world.source, world.cgroup_parent)
        assert world.runtime.adopt() == 1
        new = world.artifact({"main.py": SLEEPER + "# v2\n"})
        world.run("sleeper", new, ["python3", "/artifact/main.py"], seq=2)
        world.wait(
            lambda: (
                world.status("sleeper") is not None
                and world.status("sleeper").seq == 2  # type: ignore[union-attr]
                and world.status("sleeper").phase is Phase.READY
            ),  # type: ignore[union-attr]
            what="seq 2 ready",
        )
        assert workload_pid(world, "sleeper", "/artifact/main.py") != pid
        world.wait(lambda: world.log_text("sleeper").count("up") == 2, what="the new one up")
        assert world.log_text("sleeper").split("\n")[1] == "bye"  # the old one ended itself
