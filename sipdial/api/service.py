"""The contract between the HTTP API and the call engine.

The HTTP layer (:mod:`sipdial.api.http`) validates and authorises requests and then talks
to the engine only through :class:`CallApi`. The engine answers with plain JSON-able dicts
("call resources") and reports refusals as :class:`ApiError`, which the HTTP layer turns
into ``{"error": {"code": ..., "message": ...}}`` with the given status.

Call resource (the dict returned by ``create_call``/``get_call``/``hangup_call``; see
``sipdial.store.models.CallRecord.to_json``)::

    {
      "id": "9f3a...",              # URL-safe ([A-Za-z0-9._~-]); used in /v1/calls/{id}
      "user": "201",                # the user whose phone is rung first (token scoping uses it)
      "to": "+4930123456",          # normalised target as accepted by the API
      "mode": "refer",              # a sipdial.calls.Mode value: "refer" | "bridge"
      "state": "user_ringing",      # a sipdial.calls.CallState value
      "cause": null | "completed",  # set once state == "ended"
      "created_at": "2026-11-21T13:35:55.123Z",
      "ended_at": null | "...",
      "device": null | "...",
      "auto_answer": false,
      "events": [                   # oldest first; every state the call entered
        {"state": "calling_user", "time": "2026-11-21T13:35:55.123Z",
         "sip_code": null, "detail": "1 device(s)"},
        {"state": "user_ringing", "time": "...", "sip_code": 180, "detail": null}
      ]
    }

The API layer relies on ``id``, ``user`` and ``state``; ``sipdial call`` prints ``events``
(falling back to ``state`` if there are none) and ``cause``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from sipdial.calls import CallState, Mode
from sipdial.store import Metadata
from sipdial.vocabulary import Direction

__all__ = ["ApiError", "CallApi", "MetricsPort", "OtherWorkers", "WorkerReply"]


@dataclass(frozen=True, slots=True)
class WorkerReply:
    """Another worker's answer to a request handed to it."""

    status: int
    body: bytes  #: its JSON
    headers: tuple[tuple[str, str], ...] = ()  #: those worth passing on (challenges)


class OtherWorkers(Protocol):
    """The other worker processes behind the same HTTP port (``sipdial serve --workers``,
    :mod:`sipdial.workers`). A call lives in the worker that started it; its id names that
    worker (:class:`sipdial.sip.Shard`), so ``GET``/``DELETE /v1/calls/{id}`` go there and
    ``GET /v1/calls`` asks every worker. Each answers on its own loopback port, under the
    same authentication as the shared one."""

    def owner_of(self, call_id: str) -> int | None:
        """The other worker whose call this id would be; None: this worker's (or nobody's)."""

    def others(self) -> Sequence[int]:
        """Every other worker's index."""

    def index(self) -> int:
        """This worker's index."""

    def primary(self) -> int | None:
        """The worker that holds what only one does (the ``[upstream]`` registration), if
        not this one."""

    def request(self, worker: int, method: str, target: str,
                authorization: str | None,
                extra: Mapping[str, str] | None = None) -> Deferred[WorkerReply]:
        """``method target`` (path and query) at that worker; fails when it cannot be
        reached (restarting). ``extra``: more headers (a web session's cookie, CSRF)."""


class MetricsPort(Protocol):
    """What the HTTP API feeds and serves of :mod:`sipdial.metrics`."""

    def exposition(self) -> bytes:
        """This process's metrics in the Prometheus text format."""

    def http_request(self, method: str, status: int) -> None:
        """A request was answered."""

    def call_accepted(self, seconds: float) -> None:
        """A call was created ``seconds`` after its request was read."""


class ApiError(Exception):
    """A refusal the client should see: HTTP status, a stable machine code and a message.

    Example: ``ApiError(409, "user_not_registered", "user 201 has no registered device")``.
    """

    def __init__(self, status: int, code: str, message: str,
                 headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or []  #: extra response headers (Retry-After, ...)

    def __repr__(self) -> str:
        return f"ApiError({self.status!r}, {self.code!r}, {self.message!r})"


class CallApi(Protocol):
    """What the HTTP API needs from the call engine.

    Arguments arrive validated: ``user`` is a known user the caller may act for, ``to`` is
    normalised (``+4930123456``, ``201`` or a ``sip:`` URI), ``mode`` None means the
    configured default. Deferreds may errback with :class:`ApiError`; anything else is
    reported to the client as a 500.
    """

    def create_call(
        self,
        *,
        user: str,
        to: str,
        device: str | None,
        auto_answer: bool | None,
        mode: Mode | None,
        confirm: bool | None = None,
        caller_id: str | None = None,
        clir: bool | None = None,
        metadata: Metadata | None = None,
        refuse_if_busy: bool | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        first_leg: str | None = None,
        sink: tuple[str, str | None] | None = None,
        caller_number: str | None = None,
    ) -> Deferred[dict[str, Any]]:
        """Start a call; fires with the new call resource. ``confirm``: play "press 1" first
        (None: the user's / config default); ``caller_id`` and ``clir``: what the target
        sees in bridge mode."""
        ...

    def get_call(self, call_id: str) -> Deferred[dict[str, Any] | None]:
        """Fire with the call resource, or None if there is no such call."""
        ...

    def list_calls(
        self, *, user: str | None, state: CallState | None, limit: int,
        direction: Direction | None = None, missed: bool = False,
        since: float | None = None, before: float | None = None,
    ) -> Deferred[list[dict[str, Any]]]:
        """Newest first, at most ``limit`` (and the rest of the last call's millisecond),
        optionally filtered by user, state, direction, missed calls only, created at or
        after ``since`` and before ``before`` (unix times)."""
        ...

    def hangup_call(self, call_id: str) -> Deferred[dict[str, Any]]:
        """Cancel or hang up; fire with the resource. Errback ApiError(404, "not_found", ...)."""
        ...

    def list_registrations(self, user: str | None) -> list[dict[str, Any]]:
        """Current registrations (contacts, User-Agent, expiry), optionally of one user."""
        ...

    def known_user(self, user: str) -> bool:
        """Whether ``user`` is a configured user."""
        ...

    def user_number(self, user: str) -> str | None:
        """The user's own number (``[[users]] number``) in E.164, if any."""
        ...

    def user_by_number(self, number: str) -> str | None:
        """The user whose own number is ``number`` (E.164), if any."""
        ...

    def health(self) -> dict[str, Any]:
        """A small JSON-able status document for ``GET /healthz`` (open to anyone)."""
        ...

    def webhook_status(self) -> list[dict[str, Any]]:
        """How webhook deliveries went since this process started, by target: ``webhook``
        (the ``[[webhooks]]`` entry's number, null for the CAMARA sinks), ``target`` (its
        URL shown without secrets, or ``camara-sinks``), ``delivered``,
        ``failed_attempts``, ``given_up``, ``queued``, ``last_delivered_at``,
        ``last_error``, ``last_error_at`` (times ISO-8601 or null)."""
        ...

    def upstream_status(self) -> dict[str, Any] | None:
        """sipdial's registration at ``[upstream]`` in full, for ``GET /v1/upstream``
        (administrators); None in standalone mode."""
        ...
