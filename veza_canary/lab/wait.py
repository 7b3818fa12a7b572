"""Polling with a deadline, on tenacity (the lab waits for daemons, containers and checks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_fixed,
)

from veza_canary.lab.config import LabError

T = TypeVar("T")


def wait_until(cond: Callable[[], T], timeout: float, what: str, *, interval: float = 0.25,
               retry_on: tuple[type[BaseException], ...] = ()) -> T:
    """Call ``cond`` until it returns something truthy; return that. ``LabError`` after ``timeout``.

    Exceptions listed in ``retry_on`` count as "not yet" (e.g. a daemon still starting).
    """
    retry = retry_if_result(lambda r: not r)
    if retry_on:
        retry = retry | retry_if_exception_type(retry_on)
    try:
        for attempt in Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(interval), retry=retry):
            with attempt:
                result = cond()
            if not attempt.retry_state.outcome.failed:  # type: ignore[union-attr]
                attempt.retry_state.set_result(result)
        return result  # the loop ends once cond() returned something truthy
    except RetryError as exc:
        last = exc.last_attempt
        detail = f" (last error: {last.exception()})" if last.failed else ""
        raise LabError(f"timed out after {timeout:g}s waiting for {what}{detail}") from None
