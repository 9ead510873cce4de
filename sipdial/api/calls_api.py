"""The HTTP API's :class:`~sipdial.api.CallApi`, implemented on the calls room.

Live calls come from :class:`~sipdial.calls.CallService`, ended ones from the store
(:class:`CallHistory`); a :class:`~sipdial.calls.CallRefused` becomes an :class:`ApiError`
with the HTTP status its :class:`~sipdial.calls.Refusal` means. The dependency points one way:
api -> calls.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from sipdial.api.service import ApiError
from sipdial.calls import (
    CallRefused,
    CallRequest,
    CallService,
    CallState,
    InboundRouter,
    Mode,
    Refusal,
)
from sipdial.events import DeliveryStatus
from sipdial.registrar import Registrar
from sipdial.store import CallRecord, Metadata, WriteReport, iso_time
from sipdial.upstream import UpstreamRegistration
from sipdial.vocabulary import Direction

__all__ = ["REFUSAL_STATUS", "CallHistory", "CallsApi"]

log = logging.getLogger("sipdial.api")

#: the HTTP status of each refusal (the code is the refusal's value)
REFUSAL_STATUS: dict[Refusal, int] = {
    Refusal.UNKNOWN_USER: 404,
    Refusal.USER_NOT_REGISTERED: 409,
    Refusal.DEVICE_NOT_REGISTERED: 409,
    Refusal.INVALID_DESTINATION: 422,
    Refusal.INVALID_NUMBER: 422,
    Refusal.DESTINATION_FORBIDDEN: 403,
    Refusal.RATE_LIMITED: 429,
    Refusal.USER_BUSY: 409,
    Refusal.INVALID_HEADER: 422,
    Refusal.NO_ROUTE: 422,
    Refusal.MEDIA_UNAVAILABLE: 422,
    Refusal.MEDIA_PORTS_EXHAUSTED: 503,
    Refusal.OVERLOADED: 503,
    Refusal.FIRST_LEG_FORBIDDEN: 403,
    Refusal.FIRST_LEG_NO_ROUTE: 422,
}


class CallHistory(Protocol):
    """Reads of the call log (:class:`sipdial.store.SqliteStore`)."""

    def get_call(self, call_id: str) -> Deferred[CallRecord | None]: ...

    def list_calls(self, *, user: str | None = None, state: str | None = None,
                   limit: int = 50, direction: str | None = None, missed: bool = False,
                   since: float | None = None, before: float | None = None
                   ) -> Deferred[list[CallRecord]]: ...

    def when_committed(self) -> Deferred[WriteReport]:
        """Fires once every write queued so far is committed."""


class CallsApi:
    def __init__(self, calls: CallService, inbound: InboundRouter, history: CallHistory,
                 registrar: Registrar, clock: Callable[[], float],
                 transactions: Callable[[], int] | None = None,
                 upstream: UpstreamRegistration | None = None,
                 webhooks: Callable[[], Sequence[DeliveryStatus]] = tuple) -> None:
        """``transactions`` counts the SIP transactions held (``/healthz``; lingering ones
        too: a transaction keeps absorbing retransmissions for up to 32 s after it ends);
        ``upstream`` is sipdial's own registration at an ``[upstream]`` registrar."""
        self._calls = calls
        self._inbound = inbound
        self._history = history
        self._registrar = registrar
        self._clock = clock
        self._transactions = transactions
        self._upstream = upstream
        self._webhooks = webhooks

    def create_call(self, *, user: str, to: str, device: str | None,
                    auto_answer: bool | None, mode: Mode | None, confirm: bool | None = None,
                    caller_id: str | None = None, clir: bool | None = None,
                    metadata: Metadata | None = None,
                    refuse_if_busy: bool | None = None,
                    headers: tuple[tuple[str, str], ...] = (),
                    first_leg: str | None = None,
                    sink: tuple[str, str | None] | None = None,
                    caller_number: str | None = None) -> Deferred[dict[str, Any]]:
        request = CallRequest(user=user, to=to, device=device, auto_answer=auto_answer,
                              mode=None if mode is None else Mode(mode), confirm=confirm,
                              caller_id=caller_id, clir=clir, metadata=metadata,
                              refuse_if_busy=refuse_if_busy, headers=headers,
                              first_leg=first_leg, sink=sink, caller_number=caller_number)
        try:
            call = self._calls.create(request)
        except CallRefused as exc:
            retry = [] if exc.retry_after is None else [
                ("Retry-After", str(max(1, math.ceil(exc.retry_after))))]
            return fail(ApiError(REFUSAL_STATUS[exc.refusal], exc.refusal.value, exc.message,
                                 retry))
        resource = call.record.to_json()

        # the 201 only once the call's first rows are committed (the store flushes a new
        # call within ~5 ms): a call a CRM was told about survives a crash right after
        def committed(_: WriteReport) -> dict[str, Any]:
            return resource

        def not_committed(failure: Failure) -> dict[str, Any]:
            # the database lost a whole batch (logged by the store); the call is placed and
            # runs: say so rather than hide a live call behind an error
            log.error("call %s: placed, but its record could not be committed: %s",
                      resource["id"], failure.getErrorMessage())
            return resource

        return self._history.when_committed().addCallbacks(committed, not_committed)

    def get_call(self, call_id: str) -> Deferred[dict[str, Any] | None]:
        live = self._live(call_id)
        if live is not None:
            return succeed(live.to_json())
        d = self._history.get_call(call_id)
        return d.addCallback(lambda rec: rec.to_json() if rec is not None else None)

    def list_calls(self, *, user: str | None, state: CallState | None,
                   limit: int, direction: Direction | None = None, missed: bool = False,
                   since: float | None = None, before: float | None = None
                   ) -> Deferred[list[dict[str, Any]]]:
        d = self._history.list_calls(user=user, state=None if state is None else state.value,
                                     limit=limit,
                                     direction=None if direction is None else direction.value,
                                     missed=missed, since=since, before=before)
        return d.addCallback(lambda recs: [self._fresh(r).to_json() for r in recs])

    def _live(self, call_id: str) -> CallRecord | None:
        """A call in progress: a click-to-dial call's record, or an inbound call's."""
        live = self._calls.live(call_id)
        if live is not None:
            return live.record
        return self._inbound.live(call_id)

    def _fresh(self, record: CallRecord) -> CallRecord:
        return self._live(record.id) or record

    def hangup_call(self, call_id: str) -> Deferred[dict[str, Any]]:
        record = self._calls.hang_up(call_id) or self._inbound.hang_up(call_id, self._clock())
        if record is not None:
            return succeed(record.to_json())

        def ended(rec: CallRecord | None) -> dict[str, Any]:
            if rec is None:
                raise ApiError(404, "not_found", f"no call {call_id}")
            return rec.to_json()

        return self._history.get_call(call_id).addCallback(ended)

    def list_registrations(self, user: str | None) -> list[dict[str, Any]]:
        now = self._clock()
        registrar = self._registrar
        bindings = registrar.contacts(user, now) if user else registrar.all(now)
        return [b.to_json(now) for b in bindings]

    def known_user(self, user: str) -> bool:
        return self._calls.knows_user(user)

    def user_number(self, user: str) -> str | None:
        return self._calls.user_number(user)

    def user_by_number(self, number: str) -> str | None:
        return next((uid for uid in self._calls.users
                     if self._calls.user_number(uid) == number), None)

    def health(self) -> dict[str, Any]:
        health = {"status": "ok",
                  "calls": self._calls.count,  # click-to-dial calls in progress
                  "relayed_calls": self._inbound.count,  # the phones' own calls, relayed
                  "registrations": len(self._registrar.all(self._clock())),
                  "sip_transactions": self._transactions() if self._transactions else 0}
        if self._upstream is not None:
            # [upstream]: the state only; registrar, account and the reason of a failure are
            # for administrators (GET /v1/upstream): /healthz answers anyone
            health["upstream"] = {"state": self._upstream.status(self._clock()).summary}
        return health

    def webhook_status(self) -> list[dict[str, Any]]:
        return [{"webhook": s.webhook, "target": s.target, "delivered": s.delivered,
                 "failed_attempts": s.failed_attempts, "given_up": s.given_up,
                 "queued": s.queued,
                 "last_delivered_at": _iso_or_none(s.last_delivered_at),
                 "last_error": s.last_error, "last_error_at": _iso_or_none(s.last_error_at)}
                for s in self._webhooks()]

    def upstream_status(self) -> dict[str, Any] | None:
        """sipdial's registration at ``[upstream]`` in full (None: standalone)."""
        if self._upstream is None:
            return None
        now = self._clock()
        return self._upstream.status(now).to_json(now)


def _iso_or_none(t: float | None) -> str | None:
    return None if t is None else iso_time(t)
