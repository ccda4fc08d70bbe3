"""Trying again after a wait: fileflow's retry loops, all through tenacity, all configured here.

A loop says what to retry (``retry``: an exception or a result that is worth another try),
how long to wait before each new try (``wait``) and when to give up (``stop``); ``on_wait``
hears of each wait before it starts (to log it). When it gives up, :func:`call` and
:func:`acall` raise the last exception as it was (never tenacity's ``RetryError``) or return
the last result, so a caller handles the outcome of the last try as it would a single one.

This module sits at the error tree's layer (``docs/architecture.md``): storage
(``blocks/storage.py``), the router (``flows/router.py``) and the warm worker
(``fileflow/server/worker``) use it; converters do not retry by themselves (their steps are
retried by Prefect, ``fileflow/errors.py``).
"""

from __future__ import annotations

import math
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    stop_before_delay,
    wait_exponential,
)

__all__ = [
    "acall", "call", "doubling", "doubling_with_jitter", "in_turn", "retry_if_exception", "retry_if_exception_type", "retry_if_result",
    "stop_after_attempt", "stop_after_delay", "stop_before_delay",
]

T = TypeVar("T")

#: ``on_wait(exception or None, result or None, seconds)``: the try that failed, and the wait ahead
OnWait = Callable[[BaseException | None, Any, float], None]


def doubling(first_s: float, most_s: float = math.inf) -> wait_exponential:
    """Waits of ``first_s``, twice that, four times ... never longer than ``most_s``."""
    return wait_exponential(multiplier=first_s, exp_base=2, max=most_s)


def doubling_with_jitter(attempt: int, first_s: float, most_s: float, rng: Callable[[], float]) -> float:
    """The wait after failed attempt ``attempt`` (1, 2, ...) of a retry whose state is kept
    elsewhere (the callback outbox keeps it in storage, so no tenacity loop spans the attempts):
    ``first_s`` doubled each time up to ``most_s``, then "equal jitter" (half of it fixed, half
    drawn by ``rng()`` in [0, 1)), so receivers that were down together are not hit together."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, not {attempt}")
    cap = min(most_s, first_s * 2 ** min(attempt - 1, 64))
    return cap / 2 + rng() * cap / 2


def in_turn(waits_s: Sequence[float]) -> Callable[[RetryCallState], float]:
    """The waits ``waits_s`` one after the other (the last again if tries outnumber them: stop
    with ``stop_after_attempt(len(waits_s) + 1)``)."""
    waits = tuple(waits_s)
    if not waits:
        raise ValueError("in_turn() needs at least one wait")

    def wait(state: RetryCallState) -> float:
        return waits[min(state.attempt_number, len(waits)) - 1]

    return wait


def _last_outcome(state: RetryCallState) -> Any:
    assert state.outcome is not None
    return state.outcome.result()  # the last exception raised as is, or the last result


def _before_sleep(on_wait: OnWait | None) -> Callable[[RetryCallState], None] | None:
    if on_wait is None:
        return None

    def hear(state: RetryCallState) -> None:
        assert state.outcome is not None
        failed = state.outcome.failed
        seconds = state.upcoming_sleep
        on_wait(state.outcome.exception() if failed else None, None if failed else state.outcome.result(), seconds)

    return hear


def call(fn: Callable[..., T], /, *args: Any, retry: Any, wait: Any, stop: Any, on_wait: OnWait | None = None,
         **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, tried again after each wait while ``retry`` says so, until ``stop``."""
    retrying = Retrying(retry=retry, wait=wait, stop=stop, before_sleep=_before_sleep(on_wait),
                        retry_error_callback=_last_outcome)
    return retrying(fn, *args, **kwargs)


async def acall(fn: Callable[..., Awaitable[T]], /, *args: Any, retry: Any, wait: Any, stop: Any,
                on_wait: OnWait | None = None, **kwargs: Any) -> T:
    """:func:`call` for a coroutine function; the waits are ``asyncio.sleep``."""
    retrying = AsyncRetrying(retry=retry, wait=wait, stop=stop, before_sleep=_before_sleep(on_wait),
                             retry_error_callback=_last_outcome)
    return await retrying(fn, *args, **kwargs)
