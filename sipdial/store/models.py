"""Records the store persists: the call log, users' registrations and live events.

Plain dataclasses, independent of any database: the backends (:mod:`sipdial.store.sqlite`,
later PostgreSQL) map them to rows. Times are unix timestamps (``float`` seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

__all__ = [
    "MAX_METADATA_BYTES",
    "CallEvent",
    "CallRecord",
    "JsonValue",
    "Metadata",
    "OutboxEntry",
    "PublishedEvent",
    "RegistrationRecord",
    "WriteReport",
    "iso_time",
]


#: a JSON value, as ``json.loads`` gives it
JsonValue = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]
#: a call's ``metadata``: a JSON object, at most :data:`MAX_METADATA_BYTES` as compact JSON
Metadata = dict[str, JsonValue]
MAX_METADATA_BYTES = 2048


@lru_cache(maxsize=4096)
def iso_time(t: float) -> str:
    """Unix time as ISO-8601 UTC with milliseconds: ``"2026-11-21T13:35:55.123Z"``.

    Cached: every live event of a call formats the call's ``created_at`` and all its earlier
    event times again (the call resource is embedded in each event's payload).
    """
    text = datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


@dataclass(slots=True)
class CallEvent:
    """One step of a call's life, in the order it happened."""

    state: str  #: call state entered (e.g. "user_ringing", "connected", "ended")
    time: float  #: unix time
    sip_code: int | None = None  #: SIP status that caused it, if any
    detail: str | None = None  #: free text (reason phrase, device, ...)

    def to_json(self) -> dict[str, object]:
        return {
            "state": self.state,
            "time": iso_time(self.time),
            "sip_code": self.sip_code,
            "detail": self.detail,
        }


@dataclass(slots=True)
class CallRecord:
    """One call as the API shows it: a click-to-dial call, or (``direction`` inbound) a call
    from a trunk to a user."""

    id: str
    user: str  #: user id whose phone is rung first
    to: str  #: the dialled target (number or URI)
    mode: str  #: "refer" | "bridge"
    state: str  #: current state; "ended" once over
    cause: str | None  #: why it ended ("completed", "user_no_answer", "interrupted", ...)
    created_at: float  #: unix time
    ended_at: float | None  #: unix time, None while in progress
    device: str | None = None  #: the user's device that answered (Contact or User-Agent)
    auto_answer: bool = False  #: the user's leg was auto-answered
    #: the CRM's correlation data given with the call (a small JSON object), or None
    metadata: Metadata | None = None
    direction: str = "outbound"  #: "outbound" (click-to-dial) | "inbound" (from a trunk)
    #: inbound: the caller's number (E.164 where it parses); outbound: the external number
    #: rung first instead of the user's phones, or CAMARA's caller (a user's own number)
    caller: str | None = None
    #: inbound: who the caller is ({"name", "url"}) from the phonebook or the CRM's lookup
    contact: dict[str, str] | None = None
    #: CAMARA: where this call's CloudEvents go and their bearer token (not in the API)
    sink_url: str | None = field(default=None, repr=False)
    sink_token: str | None = field(default=None, repr=False)
    #: the call's events, oldest first (filled by reads; :meth:`save_call` does not write them)
    events: list[CallEvent] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        """The API representation; times as ISO-8601 UTC strings with milliseconds."""
        document = self.summary_json()
        document["events"] = [event.to_json() for event in self.events]
        return document

    def summary_json(self) -> dict[str, object]:
        """:meth:`to_json` without ``"events"`` (which comes last there)."""
        return {
            "id": self.id,
            "user": self.user,
            "to": self.to,
            "mode": self.mode,
            "state": self.state,
            "cause": self.cause,
            "created_at": iso_time(self.created_at),
            "ended_at": None if self.ended_at is None else iso_time(self.ended_at),
            "device": self.device,
            "auto_answer": self.auto_answer,
            "metadata": self.metadata,
            "direction": self.direction,
            "caller": self.caller,
            "contact": self.contact,
        }


@dataclass(slots=True)
class RegistrationRecord:
    """One registered contact of a user (a binding, RFC 3261 §10), kept across restarts."""

    user: str
    contact: str  #: the Contact URI as registered
    instance: str | None  #: +sip.instance (RFC 5626), if the device sent one
    transport: str  #: "udp" | "tcp" | ...: how the REGISTER arrived
    source_host: str  #: where the REGISTER came from (behind NAT this differs from contact)
    source_port: int
    expires_at: float  #: unix time
    q: float  #: Contact q-value, 0.0-1.0
    user_agent: str | None  #: User-Agent header of the REGISTER
    call_id: str  #: Call-ID of the REGISTER (RFC 3261 §10.3 step 7 ordering)
    cseq: int  #: CSeq number of the REGISTER
    registered_at: float  #: unix time of the latest refresh
    #: RFC 3327 Path of the REGISTER: its name-addr values joined by ", " ("" without one)
    path: str = ""


@dataclass(frozen=True, slots=True)
class PublishedEvent:
    """One live event (``call.ringing``, ...) as published to SSE streams and webhooks.

    ``id`` increases by one per event across restarts (it is the SSE ``id:`` and what
    ``Last-Event-ID`` resumes after); ``payload`` is the JSON document sent, as text.
    """

    id: int
    call_id: str
    user: str  #: the call's user: user tokens see only their own user's events
    name: str  #: "call.dialing", "call.ringing", ... (see sipdial.events.names)
    payload: str  #: the JSON body, exactly as sent
    time: float  #: unix time of the state change


@dataclass(slots=True)
class OutboxEntry:
    """One pending (or finished) webhook delivery: an event for one configured URL.

    Mutable: the deliverer updates ``attempts``, ``next_attempt_at``, ``status`` and
    ``last_error`` and hands the entry back to the store.
    """

    id: int  #: unique, increasing; sent as X-Sipdial-Delivery
    webhook_url: str
    event_id: int  #: PublishedEvent.id
    call_id: str  #: deliveries of one call to one URL go strictly in id order
    event_name: str
    payload: str  #: the JSON body
    created_at: float  #: unix time the entry was queued; retries stop at created_at + max_age
    attempts: int = 0  #: POSTs tried so far
    next_attempt_at: float = 0.0  #: unix time of the next try
    status: str = "pending"  #: "pending" | "done" | "failed"
    last_error: str | None = None  #: why the last try failed ("HTTP 500", "timeout", ...)
    #: None: a [[webhooks]] delivery (signed); else a CAMARA sink's CloudEvent, sent with
    #: ``Authorization: Bearer <sink_token>`` ("" : no token)
    sink_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class WriteReport:
    """What became of the writes a store committed together (see ``when_committed``).

    A row that the database or the encoder refuses (a string with a lone UTF-16 surrogate, an
    integer beyond 64 bits, ...) fails alone: it is logged and left out, every other write of
    its batch is committed. The live events and webhook deliveries so left out are named here,
    so that nothing is sent for them (a receiver must never see an id that a restart could
    hand out again).
    """

    dropped: int = 0  #: writes of the batch that could not be written (logged)
    lost_events: frozenset[int] = frozenset()  #: PublishedEvent ids not written
    lost_outbox: frozenset[int] = frozenset()  #: OutboxEntry ids not written
