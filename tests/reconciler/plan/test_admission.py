"""The rules a node checks before it runs an assignment: one refusal per rule, by its reason and
message, and the assignment the leader would write accepted."""

from __future__ import annotations

import dataclasses

import pytest

from reconciler.desired.folder import check_circle_dir
from reconciler.plan import Assignment, CommitId, GpuUuid, NodeName, WorkloadName
from reconciler.plan.admission import Refused, admit
from tests.conftest import EXAMPLE

DESIRED = check_circle_dir(EXAMPLE).state
WORKLOAD = DESIRED.workloads["langid"].document
HEAD, OLD = "a" * 40, "b" * 40
CHAIN = {OLD: 1, HEAD: 2}
LEADER = "node-b"
EPOCH = 7
GOOD = Assignment(
    workload=WorkloadName("langid"),
    slot=0,
    node=NodeName("node-a"),
    commit=CommitId(HEAD),
    seq=2,
    digest=WORKLOAD.artifact.digest or "",  # type: ignore[arg-type]
    cpu=WORKLOAD.resources.cpu,
    memory=WORKLOAD.resources.memory,
    gpus=(),
    epoch=EPOCH,
)


def decide(assignment: Assignment = GOOD, **overrides: object) -> tuple[Refused | None, str]:
    arguments: dict[str, object] = {
        "signer": LEADER,
        "me": "node-a",
        "chain": CHAIN,
        "desired": DESIRED,
        "leaders": {EPOCH: LEADER},
        "newest_epoch": EPOCH,
        "my_gpus": {"GPU-1111-2222-3333"},
    } | overrides
    decision = admit(assignment, **arguments)  # type: ignore[arg-type]
    return decision.refused, decision.message


def test_the_leaders_assignment_for_the_commit_is_accepted() -> None:
    assert decide() == (None, "")
    one_gpu = dataclasses.replace(GOOD, gpus=(GpuUuid("GPU-1111-2222-3333"),))
    assert decide(one_gpu) == (None, "")  # the example's GPU is optional: one or none


WHERE = "assignment langid/0 (seq 2)"


@pytest.mark.parametrize(
    ("change", "overrides", "reason", "message"),
    [
        ({"node": "node-c"}, {}, Refused.OTHER_NODE, f"{WHERE} is for node node-c, not node-a"),
        ({"commit": "c" * 40}, {}, Refused.NOT_ON_CHAIN,
         f"{WHERE}: commit cccccccccccc is not seq 2 of the chain this node verified"),
        ({"seq": 1}, {}, Refused.NOT_ON_CHAIN,
         "assignment langid/0 (seq 1): commit aaaaaaaaaaaa is not seq 1 of the chain"),
        ({}, {"signer": "mallory"}, Refused.SIGNER_NOT_ADMITTED,
         f"{WHERE} is signed by mallory, a node not admitted at aaaaaaaaaaaa"),
        ({}, {"signer": "node-c"}, Refused.NOT_LEADER,
         f"{WHERE} is signed by node-c, not by the leader of epoch 7"),
        ({}, {"newest_epoch": 9, "leaders": {9: "node-c"}}, Refused.STALE_EPOCH,
         f"{WHERE} comes from epoch 7; this node has seen epoch 9"),
        ({"workload": "other"}, {}, Refused.UNKNOWN_WORKLOAD,
         "assignment other/0 (seq 2): workload other does not exist at aaaaaaaaaaaa"),
        ({"digest": "sha256:" + "0" * 64}, {}, Refused.DIGEST,
         f"{WHERE}: artifact sha256:{'0' * 64} is not the one the commit pins"),
        ({"cpu": 4000}, {}, Refused.RESOURCES,
         f"{WHERE}: cpu 4000m and memory 268435456 differ from the commit's cpu 500m"),
        ({"memory": 1}, {}, Refused.RESOURCES, "differ from the commit's"),
        ({"gpus": ("GPU-9999-9999-9999",)}, {}, Refused.GPUS,
         f"{WHERE}: GPUs GPU-9999-9999-9999 are not 1 of this node's own"),
        ({"gpus": ("GPU-1111-2222-3333", "GPU-4444-5555-6666")}, {}, Refused.GPUS,
         "are not 1 of this node's own"),
    ],
    ids=[
        "another-node", "commit-not-on-chain", "wrong-seq-for-the-commit", "signer-not-admitted",
        "signer-not-the-leader", "deposed-leader", "workload-not-at-commit", "digest-differs",
        "cpu-differs", "memory-differs", "foreign-gpu", "too-many-gpus",
    ],
)  # fmt: skip
def test_an_assignment_breaking_a_rule_is_refused_with_its_reason(
    change: dict[str, object], overrides: dict[str, object], reason: Refused, message: str
) -> None:
    assignment = dataclasses.replace(GOOD, **change)  # type: ignore[arg-type]
    refused, said = decide(assignment, **overrides)
    assert refused is reason
    assert message in said


def test_a_fixed_gpu_need_takes_exactly_its_count() -> None:
    """With a GPU that is not optional, an assignment without one is refused."""
    resources = WORKLOAD.resources.model_copy(
        update={"gpu": WORKLOAD.resources.gpu.model_copy(update={"optional": False})}  # type: ignore[union-attr]
    )
    workload = WORKLOAD.model_copy(update={"resources": resources})
    loaded = dataclasses.replace(DESIRED.workloads["langid"], document=workload)
    desired = dataclasses.replace(DESIRED, workloads={"langid": loaded})
    refused, said = decide(desired=desired)
    assert refused is Refused.GPUS
    assert "GPUs none are not 1 of this node's own" in said
