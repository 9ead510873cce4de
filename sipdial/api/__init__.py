"""The HTTP API: routes, authentication and the compatibility URLs (:mod:`.http`), live events
as Server-Sent Events (:mod:`.sse`), and the engine behind them (:mod:`.service`,
:mod:`.calls_api`).

* :func:`build_site` — the Twisted ``Site`` to listen on: ``/v1/calls``,
  ``/v1/registrations``, ``/v1/events``, ``/healthz`` and LocaPhone's / pbxnsip's
  click-to-dial URLs (the route table is in :mod:`.http`). Every request is logged as one
  INFO line on ``sipdial.api`` (``GET /v1/calls/abc 200 1.3 ms``: never the query string,
  headers or bodies).
* :class:`CallApi` — what the HTTP layer needs of the engine, in plain JSON-able dicts (the
  call resource is documented in :mod:`.service`); refusals are :class:`ApiError` with the
  HTTP status to answer with.
* :class:`CallsApi` — that contract implemented on :mod:`sipdial.calls` and the store.
* :class:`OtherWorkers` — with ``sipdial serve --workers``, the other worker processes: a
  call's resource is answered by the worker that holds it, the call list by all of them.
* :class:`Links` — signed single-use call links (``POST /v1/links``, ``/c/<token>``).
* :class:`MetricsPort` — ``GET /metrics`` (:mod:`sipdial.metrics`) and what the API counts
  for it.
* :class:`EventSource` — what ``GET /v1/events`` subscribes to
  (:class:`sipdial.events.EventHub`).

Dependencies point one way: api -> calls, events, store; nothing imports api but the wiring.
"""

from sipdial.api.calls_api import CallsApi
from sipdial.api.http import ApiParts, ApiSite, build_site
from sipdial.api.links import Link, Links
from sipdial.api.service import ApiError, CallApi, MetricsPort, OtherWorkers, WorkerReply
from sipdial.api.session import Sessions
from sipdial.api.sse import EventSource

__all__ = [
           "ApiError",
           "ApiParts",
           "ApiSite",
           "CallApi",
           "CallsApi",
           "EventSource",
           "Link",
           "Links",
           "MetricsPort",
           "OtherWorkers",
           "Sessions",
           "WorkerReply",
           "build_site",
]
