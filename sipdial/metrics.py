"""``GET /metrics``: what sipdial is doing, in the Prometheus text format (issue 10 §7).

Design: nothing here runs per SIP message. The figures most of them report are counters the
engine keeps anyway (the endpoint's message counts, the transaction table, the registrar,
the webhook deliverer, the lag monitor) and are read when Prometheus scrapes, by one
:class:`_Collector` (``prometheus_client``'s custom-collector interface). Per call there are
two dictionary increments and at most two histogram observations (:class:`CallMetrics`, the
engine's :class:`~sipdial.calls.CallObserver`); per HTTP request one increment.

Metrics (all prefixed ``sipdial_``):

================================  =========  =========================================
calls_started_total               counter    ``mode``
calls_ended_total                 counter    ``mode``, ``cause``
calls_in_progress                 gauge      ``state`` (every state, 0 included)
relayed_calls_in_progress         gauge      calls between phones sipdial relays
call_setup_seconds                histogram  ``stage``: ``accepted`` (HTTP request read
                                             -> call created, the phone's INVITE handed
                                             to the transport, the 201 about to be sent),
                                             ``connected`` (call created -> connected)
registrations                     gauge      registered contacts (unexpired; with workers
                                             worker 0's: each holds the whole table)
sip_transactions                  gauge      ``kind``: ``server``/``client`` (lingering too)
sip_retransmissions_total         counter    requests/responses sent again
sip_messages_received_total       counter
sip_messages_sent_total           counter
sip_messages_malformed_total      counter    unparseable datagrams/stream messages
sip_messages_dropped_total        counter    dropped unanswered (scanners, overload)
webhook_deliveries_total          counter    ``outcome``: ``delivered``/``failed_attempt``/
                                             ``given_up``
webhook_queue                     gauge      deliveries waiting (in flight included)
event_loop_lag_seconds            gauge      how late the reactor runs a 100 ms beat
                                             (smoothed; the overload gauge)
http_requests_total               counter    ``method`` (known methods, else ``other``),
                                             ``code``
================================  =========  =========================================

plus ``process_*`` (CPU seconds, resident memory, open descriptors) of the SIP process.

With ``--workers`` each worker collects its own; the worker a scrape reaches asks the others
(their loopback ports) and :func:`merge` puts everything into one exposition with a
``worker`` label on every sample, so one scrape sees the whole service.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.process_collector import ProcessCollector

from sipdial.store import CallEvent, CallRecord
from sipdial.vocabulary import CallState

__all__ = ["CONTENT_TYPE", "CallMetrics", "MetricSources", "Metrics", "merge"]

#: what ``GET /metrics`` answers with (the text format, version 0.0.4)
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

_PREFIX: Final = "sipdial_"
#: setup latency buckets (seconds): the accepted stage is milliseconds, connected is
#: seconds (a person answers, then the target)
_SETUP_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                         2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
_HTTP_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _Histogram:
    """Cumulative-at-scrape buckets: ``observe`` is a bisect and two additions."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: +Inf
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        value = max(0.0, value)
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


class CallMetrics:
    """The call engine's observer (:class:`sipdial.calls.CallObserver`): counts calls by
    mode and cause and times their setup. Read by :class:`Metrics` at scrape time."""

    def __init__(self) -> None:
        self.started: dict[str, int] = {}  #: by mode
        self.ended: dict[tuple[str, str], int] = {}  #: by (mode, cause)
        self.accepted = _Histogram(_SETUP_BUCKETS)  #: HTTP request -> call created
        self.connected = _Histogram(_SETUP_BUCKETS)  #: call created -> connected

    def started_call(self, record: CallRecord) -> None:
        self.started[record.mode] = self.started.get(record.mode, 0) + 1

    def changed(self, record: CallRecord, event: CallEvent) -> None:
        state = event.state
        if state == CallState.CONNECTED:
            self.connected.observe(event.time - record.created_at)
        elif state == CallState.ENDED:
            key = (record.mode, record.cause or "unknown")
            self.ended[key] = self.ended.get(key, 0) + 1

    def call_accepted(self, seconds: float) -> None:
        """The API created a call ``seconds`` after it read the request."""
        self.accepted.observe(seconds)


@dataclass(frozen=True, slots=True)
class MetricSources:
    """Where the scrape-time figures come from (each a cheap read of engine state)."""

    calls_by_state: Callable[[], Iterable[str]]  #: the state of every call in progress
    relayed_calls: Callable[[], int]
    registrations: Callable[[], int | None]  #: None: not this process's to report
    transactions: Callable[[], tuple[int, int]]  #: (server, client)
    retransmissions: Callable[[], int]
    messages: Callable[[], tuple[int, int, int, int]]  #: received, sent, malformed, dropped
    webhooks: Callable[[], tuple[int, int, int, int]]  #: delivered, failed, given up, queued
    lag: Callable[[], float]  #: seconds


class Metrics:
    """One process's metrics: the call observer, HTTP counts and the scrape-time sources,
    in a registry of its own (never ``prometheus_client``'s global one)."""

    def __init__(self, sources: MetricSources, calls: CallMetrics | None = None,
                 *, process: bool = True) -> None:
        self.calls = calls or CallMetrics()
        self.sources = sources
        self.http: dict[tuple[str, str], int] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        if process:
            ProcessCollector(registry=self.registry)

    def http_request(self, method: str, status: int) -> None:
        key = (method if method in _HTTP_METHODS else "other", str(status))
        self.http[key] = self.http.get(key, 0) + 1

    def call_accepted(self, seconds: float) -> None:
        self.calls.call_accepted(seconds)

    def exposition(self) -> bytes:
        """The text format of everything, now."""
        return generate_latest(self.registry)


class _Collector:
    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        m, s, calls = self._m, self._m.sources, self._m.calls
        started = CounterMetricFamily(_PREFIX + "calls_started", "Calls started, by mode",
                                      labels=["mode"])
        for mode, n in sorted(calls.started.items()):
            started.add_metric([mode], n)
        yield started
        ended = CounterMetricFamily(_PREFIX + "calls_ended", "Calls ended, by mode and cause",
                                    labels=["mode", "cause"])
        for (mode, cause), n in sorted(calls.ended.items()):
            ended.add_metric([mode, cause], n)
        yield ended
        by_state = dict.fromkeys((st.value for st in CallState if st != CallState.ENDED), 0)
        for state in s.calls_by_state():
            by_state[state] = by_state.get(state, 0) + 1
        progress = GaugeMetricFamily(_PREFIX + "calls_in_progress",
                                     "Click-to-dial calls in progress, by state",
                                     labels=["state"])
        for state, n in by_state.items():
            progress.add_metric([state], n)
        yield progress
        yield GaugeMetricFamily(_PREFIX + "relayed_calls_in_progress",
                                "Calls between phones that sipdial relays",
                                value=s.relayed_calls())
        setup = HistogramMetricFamily(
            _PREFIX + "call_setup_seconds",
            "Call setup: accepted = HTTP request read to call created (phone's INVITE "
            "handed to the transport); connected = call created to connected",
            labels=["stage"])
        for stage, hist in (("accepted", calls.accepted), ("connected", calls.connected)):
            setup.add_metric([stage], hist.buckets(), hist.total)
        yield setup
        registrations = GaugeMetricFamily(_PREFIX + "registrations",
                                          "Registered contacts (unexpired)")
        if (held := s.registrations()) is not None:
            registrations.add_metric([], held)
        yield registrations
        server, client = s.transactions()
        txns = GaugeMetricFamily(_PREFIX + "sip_transactions",
                                 "SIP transactions held (lingering ones included)",
                                 labels=["kind"])
        txns.add_metric(["server"], server)
        txns.add_metric(["client"], client)
        yield txns
        yield CounterMetricFamily(_PREFIX + "sip_retransmissions",
                                  "SIP requests and responses sent again",
                                  value=s.retransmissions())
        received, sent, malformed, dropped = s.messages()
        for name, value, text in (
                ("received", received, "SIP messages received"),
                ("sent", sent, "SIP messages sent"),
                ("malformed", malformed, "SIP messages that did not parse"),
                ("dropped", dropped, "SIP messages dropped unanswered")):
            yield CounterMetricFamily(_PREFIX + "sip_messages_" + name, text, value=value)
        delivered, failed, given_up, queued = s.webhooks()
        hooks = CounterMetricFamily(_PREFIX + "webhook_deliveries",
                                    "Webhook delivery outcomes", labels=["outcome"])
        hooks.add_metric(["delivered"], delivered)
        hooks.add_metric(["failed_attempt"], failed)
        hooks.add_metric(["given_up"], given_up)
        yield hooks
        yield GaugeMetricFamily(_PREFIX + "webhook_queue",
                                "Webhook deliveries waiting (in flight included)",
                                value=queued)
        yield GaugeMetricFamily(_PREFIX + "event_loop_lag_seconds",
                                "How late the reactor runs a 100 ms heartbeat (smoothed)",
                                value=s.lag())
        http = CounterMetricFamily(_PREFIX + "http_requests", "HTTP requests answered",
                                   labels=["method", "code"])
        for (method, code), n in sorted(m.http.items()):
            http.add_metric([method, code], n)
        yield http


class _Families:
    """A collector that yields given families (for :func:`merge`)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def merge(expositions: Mapping[int, str]) -> bytes:
    """Several workers' expositions (by worker index) as one, every sample labelled with
    ``worker``. Raises ValueError if one does not parse (the caller leaves it out)."""
    parsed = {worker: list(text_string_to_metric_families(text))  # all or nothing
              for worker, text in expositions.items()}
    families: dict[str, Metric] = {}
    for worker, listed in sorted(parsed.items()):
        for family in listed:
            merged = families.get(family.name)
            if merged is None:
                merged = Metric(family.name, family.documentation, family.type, family.unit)
                families[family.name] = merged
            for sample in family.samples:
                labels = {**sample.labels, "worker": str(worker)}
                merged.samples.append(sample._replace(labels=labels))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families.values()))
    return generate_latest(registry)
