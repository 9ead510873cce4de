"""Webhook delivery: signed POSTs from the outbox, retried with backoff, in order per call.

Three layers, like the rest of sipdial (STYLE.md §1):

* :class:`OutboxQueue` — sans-IO: which deliveries are due at ``now``, what happens after a
  2xx or a failure. Deliveries of one call to one URL form a *line*; only the head of a line
  is ever sent, so a later event of a call waits for the earlier one (retries included).
  Different calls' lines go in parallel, at most ``DeliveryPolicy.concurrency`` POSTs per URL.
* :class:`WebhookDeliverer` — the Twisted adapter: ONE ``callLater`` for the queue's next
  wake-up (new entries and retries alike), a :class:`Poster` for the HTTP, and
  ``on_change(entry)`` after every outcome so the caller can write the row.
* :class:`~sipdial.events.http_client.AgentPoster` — the :class:`Poster` on
  ``twisted.web.client.Agent`` (its own module: nothing else needs the HTTP client).

The request (what a receiver sees)::

    POST <url>
    Content-Type: application/json
    User-Agent: sipdial
    X-Sipdial-Event: call.ringing
    X-Sipdial-Delivery: 1234            # outbox id: the same on every retry (deduplicate on it)
    X-Sipdial-Timestamp: 1763732155     # unix seconds when this attempt was signed
    X-Sipdial-Signature: sha256=<hex>   # HMAC-SHA256(secret, "<timestamp>.<body>")

    {"id": 57, "event": "call.ringing", ...}

The signed string is the decimal timestamp, one ``.``, then the raw body bytes (as Stripe
does). A receiver recomputes the HMAC over exactly those bytes, compares in constant time and
rejects timestamps older than a few minutes (:func:`verify_signature`, 5 minutes by default),
so a captured request cannot be replayed later. Every retry is signed afresh.

2xx means delivered. Anything else (status, connection error, timeout) is retried after
1, 2, 4, ... seconds, at most ``max_retry`` (300 s), each delay shortened at random by up to
``jitter`` (20 %) so that many failed deliveries do not retry in lockstep; once a delivery is
``max_age`` (24 h) old, its next failure is final (status ``failed``, logged) and the call's
next event goes next. Delivery is at least once: a POST that was in flight when sipdial
stopped is sent again at the next start.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import logging
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast
from urllib.parse import urlsplit, urlunsplit

from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from sipdial.reactor_types import DelayedCall, TimeReactor
from sipdial.store import OutboxEntry

__all__ = [
    "SINKS",
    "DeliveryPolicy",
    "DeliveryStatus",
    "OutboxQueue",
    "Poster",
    "WebhookDeliverer",
    "delivery_headers",
    "shown_url",
    "sign",
    "verify_signature",
]

log = logging.getLogger("sipdial.events")

EVENT_HEADER: Final = "X-Sipdial-Event"
DELIVERY_HEADER: Final = "X-Sipdial-Delivery"
TIMESTAMP_HEADER: Final = "X-Sipdial-Timestamp"
SIGNATURE_HEADER: Final = "X-Sipdial-Signature"
_SIGNATURE_PREFIX: Final = "sha256="


# --------------------------------------------------------------------------------------------
# Signing
# --------------------------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``"sha256=" + hex(HMAC-SHA256(secret, f"{timestamp}." + body))``."""
    signed = str(timestamp).encode("ascii") + b"." + body
    return _SIGNATURE_PREFIX + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    now: float,
    tolerance: float = 300.0,
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent.

    ``timestamp`` and ``signature`` are the header values as received; a timestamp more
    than ``tolerance`` seconds away from ``now`` (either way) is refused as a replay.
    """
    if not timestamp.isascii() or not timestamp.isdigit():
        return False
    if abs(now - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


def delivery_headers(entry: OutboxEntry, secret: str, now: float) -> dict[str, str]:
    """The headers of one attempt at ``entry``, signed at ``now``; a CAMARA sink's
    CloudEvent instead carries its bearer token (structured mode)."""
    if entry.sink_token is not None:
        headers = {"Content-Type": "application/cloudevents+json", "User-Agent": "sipdial"}
        if entry.sink_token:
            headers["Authorization"] = f"Bearer {entry.sink_token}"
        return headers
    timestamp = int(now)
    return {
        "Content-Type": "application/json",
        "User-Agent": "sipdial",
        EVENT_HEADER: entry.event_name,
        DELIVERY_HEADER: str(entry.id),
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, entry.payload.encode("utf-8")),
    }


# --------------------------------------------------------------------------------------------
# Policy and the sans-IO queue
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How hard and how fast to deliver. Times in seconds."""

    first_retry: float = 1.0  #: delay after the first failure; doubles after each one
    max_retry: float = 300.0  #: longest delay between two attempts
    jitter: float = 0.2  #: each delay is shortened at random by up to this fraction
    max_age: float = 24 * 3600.0  #: a failure after this age is final
    concurrency: int = 8  #: POSTs in flight at once per webhook URL
    timeout: float = 10.0  #: one attempt, connect to end of the response
    stop_grace: float = 2.0  #: how long stop() lets POSTs in flight finish

    def __post_init__(self) -> None:
        if self.first_retry <= 0 or self.max_retry < self.first_retry:
            raise ValueError("need 0 < first_retry <= max_retry")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.timeout <= 0 or self.max_age < 0 or self.stop_grace < 0:
            raise ValueError("timeout must be > 0, max_age and stop_grace >= 0")

    def retry_delay(self, attempts: int, rnd: float) -> float:
        """Delay after the ``attempts``-th failed attempt; ``rnd`` is uniform in [0, 1)."""
        exponent = min(attempts - 1, 64)  # 2**64 s is far beyond any cap
        delay = min(self.max_retry, self.first_retry * 2.0**exponent)
        return delay * (1.0 - self.jitter * rnd)


_Line = tuple[str, str]  # (webhook url, call id)

#: the target of every CAMARA sink (a URL per call: counted together)
SINKS: Final = "camara-sinks"


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    """How deliveries to one webhook (or to all CAMARA sinks) went since sipdial started,
    for the administrators' view (``GET /v1/webhooks``)."""

    #: the ``[[webhooks]]`` entry (1, 2, ... as configured); None: the CAMARA sinks
    webhook: int | None
    #: the webhook URL shown (:func:`shown_url`), or :data:`SINKS`
    target: str
    delivered: int  #: deliveries that landed (2xx)
    failed_attempts: int  #: attempts that failed (each is retried until max_age)
    given_up: int  #: deliveries failed for good (older than max_age)
    queued: int  #: deliveries waiting (in flight included; those of earlier runs too)
    last_delivered_at: float | None  #: unix time
    last_error: str | None  #: the latest failed attempt's error ("HTTP 500", "timeout ...")
    last_error_at: float | None  #: unix time


@dataclass(slots=True)
class _Tally:
    delivered: int = 0
    failed_attempts: int = 0
    given_up: int = 0
    queued: int = 0
    last_delivered_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None


def shown_url(url: str) -> str:
    """``url`` without what may be a secret: credentials, query, fragment and the path
    past its first segment (Slack, Discord, Zapier hooks carry their key in the path):
    ``https://hooks.example.com/services/…``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(a URL that does not parse)"
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    first, more, _rest = parts.path.lstrip("/").partition("/")
    path = f"/{first}/…" if more else f"/{first}" if first else ""
    return urlunsplit((parts.scheme, netloc, path, "", ""))


class OutboxQueue:
    """Pending deliveries in lines per (URL, call); tells what to send when. No I/O.

    Entries are added in id order (as published, or as loaded at start). ``due(now)`` marks
    what it returns as in flight; each must then come back through exactly one of
    :meth:`delivered`, :meth:`failed` or :meth:`released`.
    """

    def __init__(self, policy: DeliveryPolicy, rng: Callable[[], float] = random.random) -> None:
        self._policy = policy
        self._rng = rng
        self._lines: dict[_Line, deque[OutboxEntry]] = {}
        #: per URL: heads of lines that are not in flight, as (next_attempt_at, id, line)
        self._ready: dict[str, list[tuple[float, int, _Line]]] = {}
        self._in_flight: dict[str, int] = {}  #: per URL
        self._sending: set[int] = set()  #: ids of the entries in flight
        self._size = 0

    def __len__(self) -> int:
        """Entries not finished yet (in flight included)."""
        return self._size

    @property
    def in_flight(self) -> int:
        return len(self._sending)

    def add(self, entry: OutboxEntry) -> None:
        """Queue a pending entry behind the earlier ones of its call and URL."""
        if entry.status != "pending":
            raise ValueError(f"outbox entry {entry.id} is {entry.status}, not pending")
        line = (entry.webhook_url, entry.call_id)
        queue = self._lines.get(line)
        if queue is None:
            queue = self._lines[line] = deque()
        if queue and queue[-1].id >= entry.id:
            raise ValueError(f"outbox entry {entry.id} added after {queue[-1].id}")
        queue.append(entry)
        self._size += 1
        if len(queue) == 1:
            self._make_ready(line, entry)

    def due(self, now: float) -> list[OutboxEntry]:
        """Heads whose time has come, oldest first, within each URL's concurrency."""
        out: list[OutboxEntry] = []
        for url, ready in self._ready.items():
            while ready and ready[0][0] <= now and self._has_capacity(url):
                _at, _id, line = heapq.heappop(ready)
                head = self._lines[line][0]
                out.append(head)
                self._sending.add(head.id)
                self._in_flight[url] = self._in_flight.get(url, 0) + 1
        out.sort(key=lambda entry: entry.id)
        return out

    def next_wakeup(self) -> float | None:
        """When :meth:`due` next returns something, if nothing else happens before."""
        times = [
            ready[0][0]
            for url, ready in self._ready.items()
            if ready and self._has_capacity(url)
        ]
        return min(times, default=None)

    def delivered(self, entry: OutboxEntry, now: float) -> None:
        """The receiver answered 2xx: the entry is done, the call's next one is due."""
        entry.attempts += 1
        entry.status = "done"
        self._finish(entry)

    def failed(self, entry: OutboxEntry, now: float, error: str) -> None:
        """An attempt failed: retry after the backoff, or give up if the entry is too old."""
        entry.attempts += 1
        entry.last_error = error
        if now - entry.created_at >= self._policy.max_age:
            entry.status = "failed"
            self._finish(entry)
            return
        entry.next_attempt_at = now + self._policy.retry_delay(entry.attempts, self._rng())
        self._back(entry)

    def released(self, entry: OutboxEntry) -> None:
        """The attempt was abandoned (sipdial is stopping): not counted, still the head."""
        self._back(entry)

    # --- internals ---------------------------------------------------------------------------

    def _has_capacity(self, url: str) -> bool:
        return self._in_flight.get(url, 0) < self._policy.concurrency

    def _make_ready(self, line: _Line, entry: OutboxEntry) -> None:
        ready = self._ready.setdefault(line[0], [])
        heapq.heappush(ready, (entry.next_attempt_at, entry.id, line))

    def _landed(self, entry: OutboxEntry) -> tuple[_Line, deque[OutboxEntry]]:
        line = (entry.webhook_url, entry.call_id)
        queue = self._lines.get(line)
        if entry.id not in self._sending or not queue or queue[0] is not entry:
            raise ValueError(f"outbox entry {entry.id} is not in flight")
        self._sending.discard(entry.id)
        self._in_flight[line[0]] -= 1
        return line, queue

    def _back(self, entry: OutboxEntry) -> None:
        line, _queue = self._landed(entry)
        self._make_ready(line, entry)

    def _finish(self, entry: OutboxEntry) -> None:
        line, queue = self._landed(entry)
        queue.popleft()
        self._size -= 1
        if queue:
            self._make_ready(line, queue[0])
        else:
            del self._lines[line]


# --------------------------------------------------------------------------------------------
# The Twisted adapter
# --------------------------------------------------------------------------------------------


class Poster(Protocol):
    """Sends one POST; fires with the HTTP status. Cancelling the Deferred aborts it."""

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Deferred[int]: ...

    def close(self) -> Deferred[None]:
        """Drop idle connections (at stop)."""
        ...


class WebhookDeliverer:
    """Drives an :class:`OutboxQueue` with one reactor timer and a :class:`Poster`.

    ``secrets`` maps each webhook URL to its HMAC key. ``on_change(entry)`` is called after
    every outcome that changed the entry (failed attempt, delivered, given up) so the caller
    can persist it.
    """

    def __init__(
        self,
        reactor: TimeReactor,
        poster: Poster,
        secrets: Mapping[str, str],
        on_change: Callable[[OutboxEntry], None],
        *,
        policy: DeliveryPolicy | None = None,
        clock: Callable[[], float] | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._reactor = reactor
        self._poster = poster
        self._secrets = dict(secrets)
        self._on_change = on_change
        self._policy = policy or DeliveryPolicy()
        self._clock = clock or reactor.seconds
        self._queue = OutboxQueue(self._policy, rng)
        self._timer: DelayedCall | None = None
        self._timer_at: float | None = None
        self._in_flight: dict[int, Deferred[None]] = {}
        self._running = False
        #: outcomes so far, for /metrics: deliveries that landed, attempts that failed,
        #: deliveries given up
        self.delivered = 0
        self.failed_attempts = 0
        self.given_up = 0
        #: the same by target (each configured webhook; CAMARA sinks together)
        self._tallies: dict[str, _Tally] = {url: _Tally() for url in self._secrets}

    def status(self) -> list[DeliveryStatus]:
        """Deliveries so far by target: every configured webhook, then the sinks if used."""
        numbers = {url: n for n, url in enumerate(self._secrets, 1)}
        return [DeliveryStatus(numbers.get(url), SINKS if url == SINKS else shown_url(url),
                               t.delivered, t.failed_attempts, t.given_up, t.queued,
                               t.last_delivered_at, t.last_error, t.last_error_at)
                for url, t in self._tallies.items()]

    def _tally(self, entry: OutboxEntry) -> _Tally:
        key = SINKS if entry.sink_token is not None else entry.webhook_url
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = _Tally()
        return tally

    @property
    def queue(self) -> OutboxQueue:
        return self._queue

    def add(self, entry: OutboxEntry) -> None:
        """Queue a pending entry; it is sent on the next timer tick if its line is free."""
        if entry.sink_token is None and entry.webhook_url not in self._secrets:
            raise ValueError(f"no webhook configured for {entry.webhook_url}")
        self._queue.add(entry)
        self._tally(entry).queued += 1
        self._schedule()

    def start(self) -> None:
        self._running = True
        self._schedule()

    def stop(self) -> Deferred[None]:
        """Send nothing new; give POSTs in flight ``stop_grace`` seconds, then abort them.

        Aborted and unsent entries stay pending in the store and go out at the next start.
        """
        self._running = False
        self._cancel_timer()
        waiting = list(self._in_flight.values())
        if not waiting:
            return self._poster.close()
        grace = cast(
            DelayedCall, self._reactor.callLater(self._policy.stop_grace, self._abort_all)
        )
        done: Deferred[Any] = DeferredList(waiting)

        def finished(_: object) -> Deferred[None]:
            if grace.active():
                grace.cancel()
            return self._poster.close()

        return done.addCallback(finished)

    # --- timer --------------------------------------------------------------------------------

    def _schedule(self) -> None:
        """Keep the ONE timer at the queue's next wake-up."""
        wake = self._queue.next_wakeup() if self._running else None
        if wake == self._timer_at:
            return
        self._cancel_timer()
        if wake is not None:
            delay = max(0.0, wake - self._clock())
            self._timer = cast(DelayedCall, self._reactor.callLater(delay, self._tick))
            self._timer_at = wake

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def _tick(self) -> None:
        self._timer = None
        self._timer_at = None
        if not self._running:
            return
        now = self._clock()
        for entry in self._queue.due(now):
            self._send(entry, now)
        self._schedule()

    # --- one attempt ----------------------------------------------------------------------

    def _send(self, entry: OutboxEntry, now: float) -> None:
        try:  # one entry that cannot even be sent fails alone; the others of this tick go
            secret = "" if entry.sink_token is not None else self._secrets[entry.webhook_url]
            headers = delivery_headers(entry, secret, now)
            d = self._poster.post(entry.webhook_url, entry.payload.encode("utf-8"), headers)
        except Exception as exc:  # a body that is not UTF-8, a poster bug, a URL it refuses
            d = defer.fail(exc)
        timed_out: list[bool] = []

        def on_timeout(result: object, timeout: float) -> object:
            timed_out.append(True)
            return result

        # registered first: a poster may answer at once, and the outcome removes it again
        self._in_flight[entry.id] = cast("Deferred[None]", d)
        d.addTimeout(self._policy.timeout, cast(IReactorTime, self._reactor), on_timeout)
        d.addCallbacks(
            self._answered, self._broke, callbackArgs=(entry,), errbackArgs=(entry, timed_out)
        )

    def _answered(self, status: int, entry: OutboxEntry) -> None:
        if 200 <= status <= 299:
            self._landed(entry, None)
        else:
            self._landed(entry, f"HTTP {status}")

    def _broke(self, failure: Failure, entry: OutboxEntry, timed_out: list[bool]) -> None:
        if timed_out:
            self._landed(entry, f"timeout after {self._policy.timeout:g} s")
        elif isinstance(failure.value, CancelledError) and not self._running:
            self._in_flight.pop(entry.id, None)
            self._queue.released(entry)
        else:
            self._landed(entry, _describe(failure))

    def _landed(self, entry: OutboxEntry, error: str | None) -> None:
        self._in_flight.pop(entry.id, None)
        now = self._clock()
        tally = self._tally(entry)
        if error is None:
            self.delivered += 1
            tally.delivered += 1
            tally.queued -= 1
            tally.last_delivered_at = now
            self._queue.delivered(entry, now)
        else:
            self.failed_attempts += 1
            tally.failed_attempts += 1
            tally.last_error, tally.last_error_at = error, now
            self._queue.failed(entry, now, error)
            if entry.status == "failed":
                self.given_up += 1
                tally.given_up += 1
                tally.queued -= 1
                log.error(
                    "webhook %s: gave up on delivery %d (%s, call %s) after %d attempts: %s",
                    shown_url(entry.webhook_url),
                    entry.id,
                    entry.event_name,
                    entry.call_id,
                    entry.attempts,
                    error,
                )
            else:
                log.info(
                    "webhook %s: delivery %d attempt %d failed (%s); retry in %.1f s",
                    shown_url(entry.webhook_url),
                    entry.id,
                    entry.attempts,
                    error,
                    entry.next_attempt_at - now,
                )
        try:
            self._on_change(entry)
        except Exception:
            log.exception("webhook: cannot record the outcome of delivery %d", entry.id)
        self._schedule()

    def _abort_all(self) -> None:
        for d in list(self._in_flight.values()):
            d.cancel()


def _describe(failure: Failure) -> str:
    """A short reason for ``last_error``: the exception type and message."""
    error = failure.value
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return text[:500]
