"""The release decision and the sandbox's side of it, without a sandbox: a workload that names
no secret gets none; the pinned digest may come from the build; a secret missing at the commit
or a commit without circle.yaml is refused; the sandbox binds the tmpfs read-only at
/run/secrets and the env var gets the file's path, never a reserved variable."""

from __future__ import annotations

from typing import Any, cast

import pytest

from reconciler.desired.documents import Loaded
from reconciler.desired.model.build import Build
from reconciler.desired.repository import DesiredState
from reconciler.node import sandbox
from reconciler.node.prometheus import AgentMetrics
from reconciler.node.runtime import Work
from reconciler.node.secrets import Releaser, SecretRefused
from reconciler.plan import ArtifactDigest, Assignment, CommitId, NodeName, WorkloadName
from tests.reconciler.node.runtime_world import COMMIT, MIB, NODE, workload_document
from tests.reconciler.node.test_secret_release import KEY, VALUE, desired_with, sealed

DIGEST = "sha256:" + "ab" * 32
REF = [{"secret": "token", "env": "TOKEN_FILE"}]
SECRETS = sandbox.SECRETS


def work_of(desired: DesiredState, *, pinned: str | None = DIGEST, refs: Any = REF) -> Work:
    workload = workload_document("api", DIGEST, ["true"], secrets=refs)
    workload = workload.model_copy(
        update={"artifact": workload.artifact.model_copy(update={"digest": pinned})}
    )
    assignment = Assignment(
        WorkloadName("api"), 0, NodeName(NODE), CommitId(COMMIT), 1,
        ArtifactDigest(DIGEST), 500, 64 * MIB, (), 1,
    )  # fmt: skip
    return Work(assignment, workload, desired)


def test_a_workload_that_names_no_secret_gets_none_even_without_a_key() -> None:
    assert Releaser(NODE, None)(work_of(DesiredState(), refs=[])) == {}


def test_the_pinned_digest_may_be_the_builds() -> None:
    desired = desired_with(sealed(("api",), (DIGEST,)))
    build = cast(Any, Build).model_construct(name="api", digest=DIGEST)
    desired.builds["api"] = cast(Any, Loaded)("builds/api.yaml", build, None, "")
    assert Releaser(NODE, KEY)(work_of(desired, pinned=None)) == {"token": VALUE}


@pytest.mark.parametrize(
    ("desired", "pinned", "said"),
    [
        (lambda: desired_with(), DIGEST, f"secret token is not in commit {COMMIT}"),
        (lambda: DesiredState(secrets=desired_with(sealed(("api",))).secrets), DIGEST,
         f"commit {COMMIT} has no circle.yaml"),
        (lambda: desired_with(sealed(("api",))), None, f"commit {COMMIT} pins None"),
    ],
    ids=["secret-missing", "no-circle", "nothing-pinned"],
)  # fmt: skip
def test_what_the_commit_lacks_is_refused(desired: Any, pinned: str | None, said: str) -> None:
    with pytest.raises(SecretRefused) as refused:
        Releaser(NODE, KEY)(work_of(desired(), pinned=pinned))
    assert said in str(refused.value)
    assert VALUE.decode() not in str(refused.value)


def _plan(secrets: str | None) -> sandbox.SandboxPlan:
    return sandbox.SandboxPlan(
        uid=1000, gid=1000, hostname="api-0", artifact="/a", work="/w", files="/f",
        command=("true",), env={}, secrets=secrets,
    )  # fmt: skip


def test_the_sandbox_binds_the_tmpfs_read_only_at_run_secrets() -> None:
    host = sandbox.Host({}, frozenset())
    argv = sandbox.bwrap_argv(_plan("/state/secrets/api/0"), host)
    bind = ["--perms", "0755", "--dir", "/run", "--ro-bind", "/state/secrets/api/0", SECRETS]
    assert any(argv[i : i + len(bind)] == bind for i in range(len(argv)))
    assert SECRETS not in sandbox.bwrap_argv(_plan(None), host)


def test_the_env_var_gets_the_path_and_never_a_reserved_name() -> None:
    env = sandbox.environment({}, builder="archive", secret_paths={"TOKEN_FILE": "token"})
    assert env["TOKEN_FILE"] == "/run/secrets/token"
    with pytest.raises(sandbox.SandboxError, match="CUDA_VISIBLE_DEVICES"):
        sandbox.environment({}, builder="archive", secret_paths={"CUDA_VISIBLE_DEVICES": "t"})


def test_each_release_is_counted_by_workload_and_secret() -> None:
    metrics = AgentMetrics()
    metrics.secret_released("api", "token")
    metrics.secret_released("api", "token")
    page = metrics.page()[1].decode()
    assert 'circle_secret_releases_total{secret="token",workload="api"} 2.0' in page
