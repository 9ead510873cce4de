"""Toll-fraud policy (issue 10 §2), sans-IO: what each user may dial, and how much.

``[[policy]]`` entries (:class:`sipdial.config.PolicyConfig`): allow/deny patterns on the
destination as dialled (E.164 with ``[numbers]``), per-user or shared caps on calls in
progress and calls started per minute and per hour. Every entry that names the caller
applies. A refused destination is ``403 destination_forbidden``; a cap reached is ``429
rate_limited`` with ``Retry-After`` (when the oldest counted call leaves the window; 1 s for
calls in progress). Seed 004's "press 1" guards against the same abuse from the phone's side.

Memory: one window per (entry, user) — or per entry with ``per = "all"`` — holding at most
its hourly cap of start times; users come from the config, so the tables are bounded.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sipdial.config import PolicyConfig

__all__ = ["Policy", "PolicyRefusal"]

MINUTE = 60.0
HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class PolicyRefusal:
    """Why the policy said no: ``forbidden`` (the destination) or a cap reached."""

    forbidden: bool
    message: str
    retry_after: float | None = None  #: seconds, for a cap


class Policy:
    """The ``[[policy]]`` entries, with the start times their caps count."""

    def __init__(self, rules: Sequence[PolicyConfig]) -> None:
        self.rules = tuple(rules)
        self._starts: dict[tuple[int, str], deque[float]] = {}

    def reconfigure(self, rules: Sequence[PolicyConfig]) -> None:
        """A configuration reload: these entries from now on. An entry equal to one before
        keeps the start times its caps count (wherever it moved in the list); a new or
        changed one starts with none: editing the file never resets the others' windows."""
        new = tuple(rules)
        carried: dict[tuple[int, str], deque[float]] = {}
        for index, rule in enumerate(new):
            old = next((i for i, r in enumerate(self.rules) if r == rule), None)
            if old is not None:
                carried.update({(index, key): starts for (i, key), starts
                                in self._starts.items() if i == old})
        self.rules, self._starts = new, carried

    def check(self, user: str, destination: str, now: float,
              in_progress: Callable[[str | None], int], *,
              caps: bool = True) -> PolicyRefusal | None:
        """None if ``user`` may call ``destination`` now. ``in_progress(user)`` counts that
        user's calls in progress, ``in_progress(None)`` everyone's. ``destination``: the
        number (a sip: URI destination's user part), separators removed by the caller."""
        for index, rule in enumerate(self.rules):
            if not rule.applies_to(user):
                continue
            for pattern in rule.deny:
                if pattern.search(destination):
                    return PolicyRefusal(True, f"{user} may not call {destination} "
                                         f"(denied by policy {index + 1}: {pattern.pattern})")
            if rule.allow and not any(p.search(destination) for p in rule.allow):
                return PolicyRefusal(True, f"{user} may not call {destination} (policy "
                                     f"{index + 1} allows only its allow patterns)")
            if not caps:
                continue
            shared = rule.per == "all"
            whose = "these users'" if shared else f"{user}'s"
            if shared:
                running = in_progress(None) if "*" in rule.users \
                    else sum(in_progress(u) for u in rule.users)
            else:
                running = in_progress(user)
            if rule.max_concurrent is not None and running >= rule.max_concurrent:
                return PolicyRefusal(False, f"{whose} {rule.max_concurrent} calls in progress "
                                     f"at once (policy {index + 1})", 1.0)
            starts = self._window(index, "*" if shared else user, now)
            for cap, span, what in ((rule.max_per_minute, MINUTE, "minute"),
                                    (rule.max_per_hour, HOUR, "hour")):
                if cap is None:
                    continue
                recent = _since(starts, now - span)
                if recent >= cap:
                    # (a cap of 0: a worker's share of a small cap; another may have room)
                    oldest = starts[len(starts) - recent] if recent else now - span
                    wait = max(1.0, math.ceil(oldest + span - now))
                    return PolicyRefusal(False, f"{whose} {cap} calls per {what} "
                                         f"(policy {index + 1})", wait)
        return None

    def destination_refused(self, user: str, destination: str) -> str | None:
        """The deny/allow part alone (calls a phone dials through sipdial, which the caps
        do not count): why ``destination`` is refused to ``user``, or None."""
        refusal = self.check(user, destination, 0.0, _nothing_running, caps=False)
        return refusal.message if refusal is not None else None

    def started(self, user: str, now: float) -> None:
        """A call of ``user`` was accepted: it counts against every cap that applies."""
        for index, rule in enumerate(self.rules):
            if rule.applies_to(user) and (rule.max_per_minute or rule.max_per_hour):
                starts = self._window(index, "*" if rule.per == "all" else user, now)
                starts.append(now)
                keep = max(rule.max_per_hour or 0, rule.max_per_minute or 0)
                while len(starts) > keep:
                    starts.popleft()

    def _window(self, index: int, key: str, now: float) -> deque[float]:
        starts = self._starts.setdefault((index, key), deque())
        while starts and starts[0] <= now - HOUR:
            starts.popleft()
        return starts


def _nothing_running(user: str | None) -> int:
    return 0


def _since(starts: deque[float], cutoff: float) -> int:
    """How many of the (ascending) ``starts`` are after ``cutoff``."""
    count = 0
    for when in reversed(starts):
        if when <= cutoff:
            break
        count += 1
    return count
