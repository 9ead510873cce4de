"""Enum members as state-table keys, hashed at C speed.

``enum.Enum.__hash__`` is a Python function (``hash(self._name_)``); every lookup in a state
table keyed by ``(state, input)`` calls it twice. Members are singletons compared by identity,
so identity hashing is equivalent and costs nothing: the tables of the transaction layer and
the call flows use :class:`Symbol` for their states, inputs and actions.
"""

from __future__ import annotations

import enum

__all__ = ["Symbol"]


class Symbol(enum.Enum):
    """An :class:`enum.Enum` whose members hash by identity."""

    __hash__ = object.__hash__
