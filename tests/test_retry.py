"""fileflow/retry.py: the waits it takes, when it gives up, and what the caller gets then."""

from __future__ import annotations

import asyncio
import time

import pytest

from fileflow import retry


class Flaky:
    """Fails with ``error`` the first ``failures`` calls, then answers ``"done"``."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")
        return "done"


def test_doubling_waits_are_heard_before_each_wait_and_capped():
    heard: list[tuple[str, float]] = []
    flaky = Flaky(4)
    result = retry.call(flaky, retry=retry.retry_if_exception(lambda e: isinstance(e, ConnectionError)),
                        wait=retry.doubling(0.01, 0.03), stop=retry.stop_after_attempt(10),
                        on_wait=lambda exc, _r, s: heard.append((str(exc), s)))
    assert result == "done" and flaky.calls == 5
    assert heard == [("failure 1", 0.01), ("failure 2", 0.02), ("failure 3", 0.03), ("failure 4", 0.03)]


def test_giving_up_raises_the_last_exception_itself():
    flaky = Flaky(10)
    with pytest.raises(ConnectionError, match="failure 3"):
        retry.call(flaky, retry=retry.retry_if_exception(lambda e: True), wait=retry.doubling(0),
                   stop=retry.stop_after_attempt(3))
    assert flaky.calls == 3


def test_an_exception_not_worth_retrying_is_raised_at_once():
    flaky = Flaky(10, error=ValueError)
    with pytest.raises(ValueError, match="failure 1"):
        retry.call(flaky, retry=retry.retry_if_exception(lambda e: isinstance(e, ConnectionError)),
                   wait=retry.doubling(0), stop=retry.stop_after_attempt(5))
    assert flaky.calls == 1


def test_stop_before_delay_never_starts_a_wait_that_would_end_past_the_window():
    flaky = Flaky(100)
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        retry.call(flaky, retry=retry.retry_if_exception(lambda e: True), wait=retry.doubling(0.1, 0.2),
                   stop=retry.stop_before_delay(0.5))
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 0.5  # waits of 0.1 and 0.2; the next 0.2 would end at 0.5
    assert flaky.calls == 3


def test_async_retry_on_result_returns_the_last_result_after_the_waits_in_turn():
    heard: list[tuple[object, float]] = []
    answers = iter(["no", "no", "no", "yes"])

    async def ask() -> str:
        return next(answers)

    async def main() -> str:
        return await retry.acall(ask, retry=retry.retry_if_result(lambda r: r != "yes"),
                                 wait=retry.in_turn([0.01, 0.02]), stop=retry.stop_after_attempt(3),
                                 on_wait=lambda exc, r, s: heard.append((r, s)))

    assert asyncio.run(main()) == "no"  # gave up after 3 tries: the third answer is the outcome
    assert heard == [("no", 0.01), ("no", 0.02)]


def test_in_turn_needs_a_wait():
    with pytest.raises(ValueError):
        retry.in_turn([])
