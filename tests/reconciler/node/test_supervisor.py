"""The crash-loop backoff, on a fake clock: immediate once, then 1 s doubling to 5 minutes;
ten minutes of health forgive every earlier crash."""

from __future__ import annotations

import pytest

from reconciler.node.supervisor import MAX_DELAY, RESET_AFTER, CrashLoop, delay_after


@pytest.mark.parametrize(
    ("crashes", "delay"),
    [(1, 0.0), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 128.0), (10, 256.0), (11, 300.0),
     (50, 300.0)],
    ids=lambda value: str(value),
)  # fmt: skip
def test_delays_double_from_one_second_up_to_five_minutes(crashes: int, delay: float) -> None:
    assert delay_after(crashes) == delay


def test_a_loop_waits_each_delay_on_the_clock_it_is_told() -> None:
    loop = CrashLoop()
    now = 1000.0
    loop.started(now, first=True)
    waits = []
    for _ in range(5):
        now += 0.5  # it crashes half a second after each start
        waits.append(loop.ended(now))
        if waits[-1]:
            assert not loop.due(loop.not_before - 0.001)
        assert loop.due(loop.not_before)
        now = loop.not_before
        loop.started(now, first=False)
    assert waits == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert loop.restarts == 5
    assert loop.looping


def test_ten_minutes_of_health_forgive_earlier_crashes() -> None:
    loop = CrashLoop()
    loop.started(0.0, first=True)
    for moment in (1.0, 2.0, 3.0):
        loop.ended(moment)
        loop.started(moment, first=False)
    assert loop.crashes == 3
    loop.healthy(3.0 + RESET_AFTER - 1)
    assert loop.crashes == 3  # not yet
    loop.healthy(3.0 + RESET_AFTER)
    assert loop.crashes == 0
    assert loop.ended(4.0 + RESET_AFTER) == 0.0  # the next crash is a first one again


def test_being_unwell_restarts_the_time_towards_forgiveness() -> None:
    loop = CrashLoop()
    loop.started(0.0, first=True)
    loop.ended(1.0)
    loop.ended(2.0)
    loop.started(2.0, first=False)
    loop.healthy(100.0)
    loop.unwell()  # not Ready any more
    loop.healthy(RESET_AFTER + 50.0)  # healthy again from here
    assert loop.crashes == 2
    assert loop.ended(RESET_AFTER + 60.0) == delay_after(3)
    assert delay_after(3) < MAX_DELAY
