"""Typing protocols for the parts of Twisted's reactor that sipdial injects.

Zope interfaces (``IReactorTime``, ``IDelayedCall``) do not type-check as such without a mypy
plugin; these Protocols name exactly what the store, the webhook deliverer and others use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall


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
