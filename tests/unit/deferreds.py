"""Helpers for testing Deferred-returning code without a reactor or threads."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

T = TypeVar("T")


def run_now(f: Callable[[], T]) -> Deferred[T]:
    """A synchronous stand-in for the store's worker thread."""
    try:
        return succeed(f())
    except Exception as exc:
        return fail(exc)


def result(d: Deferred[T]) -> T:
    """The result of an already-fired Deferred (raises its failure)."""
    results: list[T | Failure] = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    value = results[0]
    if isinstance(value, Failure):
        value.raiseException()
    return value  # type: ignore[return-value]
