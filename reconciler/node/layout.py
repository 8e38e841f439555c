"""Where a circle's agents keep things in the state store: one prefix per circle, one key per
thing, every value a record signed by a node key (`reconciler.node.identity`).

    circles/<circle>/nodes/<node>                              a node's registration (its lease)
    circles/<circle>/leader                                    the leader record (its lease);
                                                               epoch = the key's create revision
    circles/<circle>/assignments/<workload>/<slot>/<seq>       an assignment, by the leader
    circles/<circle>/status/<node>/<workload>/<slot>/<seq>     a node's status of an assignment
    circles/<circle>/events/<ms, 13 digits>-<node>-<n>         an event (append only, bounded)
    circles/<circle>/volumes/<volume>/<object id>              the last scrub of a volume object

Names are the circle's own (DNS-label names, digits): a key is built from them only, and a key
read back is parsed strictly, so a planted key is ignored, never misread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?"
_NUMBER = r"(0|[1-9][0-9]{0,15})"


@dataclass(frozen=True, slots=True)
class Layout:
    circle: str

    @property
    def root(self) -> str:
        return f"circles/{self.circle}/"

    @property
    def nodes(self) -> str:
        return f"{self.root}nodes/"

    def node(self, name: str) -> str:
        return f"{self.nodes}{name}"

    @property
    def leader(self) -> str:
        return f"{self.root}leader"

    @property
    def assignments(self) -> str:
        return f"{self.root}assignments/"

    def assignment(self, workload: str, slot: int, seq: int) -> str:
        return f"{self.assignments}{workload}/{slot}/{seq}"

    @property
    def statuses(self) -> str:
        return f"{self.root}status/"

    def status(self, node: str, workload: str, slot: int, seq: int) -> str:
        return f"{self.statuses}{node}/{workload}/{slot}/{seq}"

    @property
    def events(self) -> str:
        return f"{self.root}events/"

    def event(self, time_ms: int, node: str, number: int) -> str:
        return f"{self.events}{time_ms:013d}-{node}-{number}"

    @property
    def volumes(self) -> str:
        return f"{self.root}volumes/"

    def volume(self, volume: str, object_id: str) -> str:
        return f"{self.volumes}{volume}/{object_id}"

    def volume_of(self, key: str) -> tuple[str, str] | None:
        """(volume, object id) of a volume status key, or None."""
        found = re.fullmatch(re.escape(self.volumes) + f"({_NAME})/([0-9a-f]{{64}})", key)
        return None if found is None else (found.group(1), found.group(3))

    def node_of(self, key: str) -> str | None:
        """The node a registration key names, or None for a key that is no registration."""
        found = re.fullmatch(re.escape(self.nodes) + f"({_NAME})", key)
        return found.group(1) if found else None

    def assignment_of(self, key: str) -> tuple[str, int, int] | None:
        """(workload, slot, seq) of an assignment key, or None."""
        found = re.fullmatch(re.escape(self.assignments) + f"({_NAME})/{_NUMBER}/{_NUMBER}", key)
        if found is None:
            return None
        return found.group(1), int(found.group(3)), int(found.group(4))

    def status_of(self, key: str) -> tuple[str, str, int, int] | None:
        """(node, workload, slot, seq) of a status key, or None."""
        found = re.fullmatch(
            re.escape(self.statuses) + f"({_NAME})/({_NAME})/{_NUMBER}/{_NUMBER}", key
        )
        if found is None:
            return None
        return found.group(1), found.group(3), int(found.group(5)), int(found.group(6))

    def subject_of(self, key: str) -> str:
        """What a store key is about, as an event names it: node/NAME, assignment/WORKLOAD/SLOT,
        or store/leader, store/record for others."""
        if (node := self.node_of(key)) is not None:
            return f"node/{node}"
        if (placed := self.assignment_of(key)) is not None:
            return f"assignment/{placed[0]}/{placed[1]}"
        if (status := self.status_of(key)) is not None:
            return f"assignment/{status[1]}/{status[2]}"
        if (volume := self.volume_of(key)) is not None:
            return f"volume/{volume[0]}"
        return "store/leader" if key == self.leader else "store/record"
