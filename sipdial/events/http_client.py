"""The :class:`~sipdial.events.webhooks.Poster` on ``twisted.web.client.Agent``.

Persistent connections (a pool per :class:`AgentPoster`), the body sent with a
Content-Length, the response body read to its end and dropped so the connection can be
reused. https verifies the receiver's certificate against the system trust store and its host
name (Twisted's ``tls`` extra: pyOpenSSL, service_identity).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer  # type: ignore[import-untyped]

__all__ = ["AgentPoster"]


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

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Deferred[int]:
        raw = Headers({name.encode("latin-1"): [value.encode("latin-1")]
                       for name, value in headers.items()})
        d: Deferred[IResponse] = self._agent.request(
            b"POST", url.encode("utf-8"), raw, _Body(body)
        )
        return d.addCallback(self._drain)

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
