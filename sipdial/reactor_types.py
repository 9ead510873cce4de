"""Typing protocols for the parts of Twisted's reactor that sipdial injects, and a
:class:`~twisted.python.failure.Failure` as stdlib ``logging`` wants it.

Zope interfaces (``IReactorTime``, ``IDelayedCall``) do not type-check as such without a mypy
plugin; these Protocols name exactly what the store, the webhook deliverer and others use.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, TypeAlias, cast

from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure


class TimeReactor(Protocol):
    """``IReactorTime``: the clock and ``callLater``."""

    def seconds(self) -> float: ...

    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: object, **kw: object
    ) -> IDelayedCall: ...


class DelayedCall(Protocol):
    """The part of ``IDelayedCall`` that is used: is it pending, and cancel it."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...


class _HasTraceback(Protocol):
    def getTracebackObject(self) -> TracebackType | None: ...


ExcInfo: TypeAlias = (
    tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
)


def exc_info(failure: Failure) -> ExcInfo:
    """``failure`` as ``sys.exc_info()``, for ``log.error(..., exc_info=exc_info(failure))``.

    The traceback survives :meth:`Failure.cleanFailure` (which a Deferred applies), unlike the
    exception's own ``__traceback__``.
    """
    value = failure.value
    if value is None:
        return None, None, None
    return type(value), value, cast(_HasTraceback, failure).getTracebackObject()
