"""The :class:`~sipdial.events.webhooks.Poster` on ``twisted.web.client.Agent``.

Persistent connections (a pool per :class:`AgentPoster`), the body sent with a
Content-Length, the response body read to its end and dropped so the connection can be
reused. A receiver may close an idle kept-alive connection just as the next POST goes out
on it (an HTTP/1.0 server closes after every answer without saying so): a POST that got no
answer because the connection closed is sent once more at once on a new connection, as
Twisted does for GET. Receivers see a delivery twice only if they had taken it and closed
before answering; webhooks are at least once anyway (``X-Sipdial-Delivery`` dedupes).
https verifies the receiver's certificate against the system trust store and its host
name (Twisted's ``tls`` extra: pyOpenSSL, service_identity).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

# RequestNotSent (a cached connection found closed before sending) is not re-exported
from twisted.web._newclient import RequestNotSent
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer  # type: ignore[import-untyped]

__all__ = ["AgentFetcher", "AgentPoster"]


class _Consumer(Protocol):
    def write(self, data: bytes) -> None: ...


@implementer(IBodyProducer)
class _Body:
    """A request body that is already in memory."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: _Consumer) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _Discard(TwistedProtocol):
    """Reads a response body to its end and throws it away (so the connection is reused)."""

    def __init__(self, finished: Deferred[None]) -> None:
        self._finished = finished

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self._finished.called:
            self._finished.callback(None)


class AgentPoster:
    """Sends webhook POSTs; ``per_host`` idle connections are kept per receiver."""

    def __init__(self, reactor: Any, *, connect_timeout: float = 10.0, per_host: int = 8) -> None:
        # Twisted's web client is untyped: keep it behind this class
        self._pool: Any = HTTPConnectionPool(reactor, persistent=True)  # type: ignore[no-untyped-call]
        self._pool.maxPersistentPerHost = per_host
        self._agent: Any = Agent(  # type: ignore[no-untyped-call]
            reactor, connectTimeout=connect_timeout, pool=self._pool
        )
        # the second try of a POST whose kept-alive connection closed: a new connection
        fresh: Any = HTTPConnectionPool(reactor, persistent=False)  # type: ignore[no-untyped-call]
        self._fresh: Any = Agent(  # type: ignore[no-untyped-call]
            reactor, connectTimeout=connect_timeout, pool=fresh
        )

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Deferred[int]:
        raw = Headers({name.encode("latin-1"): [value.encode("latin-1")]
                       for name, value in headers.items()})
        target = url.encode("utf-8")
        d: Deferred[IResponse] = self._agent.request(b"POST", target, raw, _Body(body))

        def again(failure: Failure) -> Failure | Deferred[IResponse]:
            if not _closed_before_answer(failure):
                return failure
            retry: Deferred[IResponse] = self._fresh.request(b"POST", target, raw, _Body(body))
            return retry

        return d.addErrback(again).addCallback(self._drain)

    @staticmethod
    def _drain(response: Any) -> Deferred[int]:
        """Fires with the status once the body (ignored) has been read to its end."""
        protocol: list[_Discard] = []

        def abort(_: Deferred[None]) -> None:
            transport = protocol[0].transport if protocol else None
            if transport is not None:
                transport.stopProducing()

        finished: Deferred[None] = Deferred(abort)
        protocol.append(_Discard(finished))
        response.deliverBody(protocol[0])
        code: int = response.code
        return finished.addCallback(lambda _: code)

    def close(self) -> Deferred[None]:
        d: Deferred[None] = self._pool.closeCachedConnections()
        return d.addCallback(lambda _: None)


def _closed_before_answer(failure: Failure) -> bool:
    """The request got no answer because the connection closed under it (not a timeout or
    a cancel, not a refused connection: those are ordinary failed attempts)."""
    error = failure.value
    if not isinstance(error, RequestNotSent | RequestTransmissionFailed
                      | ResponseNeverReceived):
        return False
    reasons: list[Failure] = list(getattr(error, "reasons", []))
    errors = [r.value for r in reasons]
    return not any(isinstance(e, CancelledError) for e in errors) and (
        isinstance(error, RequestNotSent)
        or any(isinstance(e, ConnectionDone | ConnectionLost) for e in errors))


class _Collect(TwistedProtocol):
    """Reads a response body up to ``limit`` bytes (more: the connection is dropped)."""

    def __init__(self, finished: Deferred[bytes], limit: int) -> None:
        self._finished = finished
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            if self.transport is not None:
                self.transport.stopProducing()
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self._finished.called:
            self._finished.callback(b"".join(self._parts))


class AgentFetcher:
    """GETs a URL (the CRM's contact lookup, :mod:`sipdial.contacts`): the body of a 2xx, at
    most ``limit`` bytes; None for a 404 (nobody); fails for another status, on errors and
    after ``timeout`` s (the connection is dropped). https verifies the server like
    :class:`AgentPoster`."""

    def __init__(self, reactor: Any, *, timeout: float = 5.0, limit: int = 64 * 1024) -> None:
        self._reactor = reactor
        self._timeout = timeout
        self._limit = limit
        self._pool: Any = HTTPConnectionPool(reactor, persistent=True)  # type: ignore[no-untyped-call]
        self._agent: Any = Agent(  # type: ignore[no-untyped-call]
            reactor, connectTimeout=timeout, pool=self._pool
        )

    def get(self, url: str) -> Deferred[bytes | None]:
        headers = Headers({b"Accept": [b"application/json"]})
        d: Deferred[Any] = self._agent.request(b"GET", url.encode("utf-8"), headers, None)
        d.addCallback(self._body)
        d.addTimeout(self._timeout, self._reactor)
        return d

    def _body(self, response: Any) -> Deferred[bytes | None] | None:
        code = int(response.code)
        if not 200 <= code <= 299:
            response.deliverBody(_Discard(Deferred()))
            if code == 404:
                return None
            raise ValueError(f"HTTP {code}")
        collector: list[_Collect] = []

        def abort(_: Deferred[bytes]) -> None:  # the timeout: drop the connection
            transport = collector[0].transport if collector else None
            if transport is not None:
                transport.abortConnection()

        finished: Deferred[bytes] = Deferred(abort)
        collector.append(_Collect(finished, self._limit))
        response.deliverBody(collector[0])
        return finished.addCallback(lambda body: body)

    def close(self) -> Deferred[None]:
        d: Deferred[None] = self._pool.closeCachedConnections()
        return d.addCallback(lambda _: None)
