"""`circle.yaml`: who owns the circle and how they decide (the policy of the Human Chain).

The model holds the data; `reconciler.desired.checks` holds the rules that relate its parts (every
rule satisfiable, a catch-all and a governance rule, no key shared by two members). The meaning
of rules for approvals is the Human Chain's (DESIGN.md section 4).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from reconciler.desired.model.admission import AdmissionRules
from reconciler.desired.model.base import Document, Strict
from reconciler.desired.model.types import (
    Duration,
    MlDsa65PublicKey,
    Name,
    PathPattern,
    Sha256Hex,
    SshPublicKey,
)

GOVERNANCE_RULE = "governance"
POLICY_FILE = "circle.yaml"


class SshKey(Strict):
    """An Ed25519 SSH key: owners sign approvals with the keys they already have."""

    type: Literal["ssh-ed25519"]
    key: SshPublicKey = Field(description="The public key line, as in ~/.ssh/id_ed25519.pub.")


class SigstoreIdentity(Strict):
    """A keyless sigstore identity, verified offline against the pinned trust root."""

    type: Literal["sigstore"]
    identity: str = Field(
        min_length=3, max_length=512, description="Certificate identity (e-mail or URI)."
    )
    issuer: str = Field(
        pattern=r"^https://[^\s/]+(/\S*)?$",
        description="OIDC issuer URL, e.g. https://github.com/login/oauth.",
    )


class MlDsaKey(Strict):
    """An ML-DSA-65 key (FIPS 204): a signature a quantum computer cannot forge."""

    type: Literal["ml-dsa-65"]
    key: MlDsa65PublicKey = Field(
        description="The public key line, as circle keygen --type ml-dsa-65 writes to PATH.pub."
    )


MemberKey = Annotated[SshKey | SigstoreIdentity | MlDsaKey, Field(discriminator="type")]
CLASSIC_KEYS = (SshKey, SigstoreIdentity)
"""Keys a quantum computer could forge signatures of (Ed25519, and sigstore's ECDSA)."""

SignatureMode = Literal["classic", "hybrid", "post-quantum"]
"""Which members' signatures a rule counts: `classic`, any valid signature of a member's key
(ML-DSA included); `hybrid`, only a member who signed the same statement with a classic key AND
an ML-DSA key; `post-quantum`, only ML-DSA signatures."""


class Member(Strict):
    id: Name = Field(description="Stable member id, used in rules and approvals.")
    weight: int = Field(default=1, ge=1, le=1000, description="Votes this member carries.")
    keys: list[MemberKey] = Field(
        min_length=1, description="Keys whose signatures count for this member."
    )
    contact: str | None = Field(default=None, description="How to reach this member.")


class Rule(Strict):
    """Changes to paths matching `paths` need signatures of `threshold` weight from `members`."""

    name: Name
    paths: list[PathPattern] = Field(
        min_length=1, description="Patterns: '*' stays within a component, '**' spans any."
    )
    members: list[Name] | None = Field(
        default=None, description="Members whose signatures count; all members when absent."
    )
    threshold: int = Field(ge=1, description="Weight of signatures needed.")
    required: list[Name] = Field(
        default_factory=list, description="Members who must be among the signers."
    )
    signatures: SignatureMode = Field(
        default="classic",
        description="Which signatures count: 'classic' (any member key, ML-DSA included), "
        "'hybrid' (a member counts only with a classic AND an ML-DSA signature of the same "
        "statement) or 'post-quantum' (ML-DSA signatures only).",
    )


class Consensus(Strict):
    rules: list[Rule] = Field(min_length=1)
    approval_lifetime: Duration = Field(
        default=7 * 86400, description="How long an approval stays valid after it is issued."
    )
    allow_symlinks: bool = Field(default=False, description="Allow symbolic links in the tree.")
    allow_submodules: bool = Field(default=False, description="Allow Git submodules in the tree.")


class Admission(Strict):
    """Admission rules that `circle validate` applies to the desired state."""

    presets: list[Name] = Field(
        default_factory=list, description="Shipped admission presets (policies/admission/)."
    )
    rules: AdmissionRules | None = Field(default=None, description="The circle's own rules.")


class Circle(Document):
    kind: Literal["Circle"]
    id: Name = Field(description="Stable circle id; never changes over the circle's life.")
    description: str | None = Field(default=None, description="Free text for humans.")
    version: int = Field(ge=1, description="Policy version; each change of circle.yaml adds one.")
    previous: Sha256Hex | None = Field(
        default=None, description="sha256 of the previous circle.yaml bytes (absent at version 1)."
    )
    members: list[Member] = Field(min_length=1)
    consensus: Consensus
    admission: Admission = Field(default_factory=Admission)

    def member(self, member_id: str) -> Member | None:
        return next((member for member in self.members if member.id == member_id), None)

    def rule(self, name: str) -> Rule | None:
        return next((rule for rule in self.consensus.rules if rule.name == name), None)
