"""A contender in the compare-and-swap race of test_processes.py, run as its own process:

    python -m tests.reconciler.store.cas_worker URL KEY ROUNDS NAME

It announces itself at KEY/ready/NAME and waits for KEY/go, so that all contenders start
together; then it increments the counter at KEY with compare-and-swap transactions until the
counter reaches ROUNDS, and prints (JSON) the rounds it won and how many attempts it lost.
Each win also records the winner at KEY/won/ROUND, in the same transaction.
"""

from __future__ import annotations

import json
import sys
import time

from reconciler.store import Compare, Put, open_store


def main(url: str, key: str, rounds: int, name: str) -> dict[str, object]:
    won: list[int] = []
    lost = 0
    with open_store(url) as store:
        store.put(f"{key}/ready/{name}", b"")
        deadline = time.monotonic() + 60
        while store.get(f"{key}/go") is None:
            assert time.monotonic() < deadline, "no go within 60 s"
            time.sleep(0.01)
        while True:
            current = store.get(key)
            assert current is not None, f"{key} is missing"
            count = int(current.value)
            if count >= rounds:
                return {"won": won, "lost": lost}
            result = store.txn(
                [Compare.mod_revision(key, "=", current.mod_revision)],
                [Put(key, str(count + 1).encode()), Put(f"{key}/won/{count + 1}", name.encode())],
            )
            if result.succeeded:
                won.append(count + 1)
            else:
                lost += 1


if __name__ == "__main__":
    url, key, rounds, name = sys.argv[1:5]
    print(json.dumps(main(url, key, int(rounds), name)))
