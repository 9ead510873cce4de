"""The webhook POSTs' HTTP client against a real receiver on loopback that closes its
connection after every answer without saying so (Python's http.server speaks HTTP/1.0):
kept-alive connections it closed are noticed and the POST goes again on a new one, so
back-to-back deliveries are neither lost nor counted as failed attempts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.selectreactor import SelectReactor
from twisted.internet.threads import blockingCallFromThread

from sipdial.events.http_client import AgentPoster

pytestmark = pytest.mark.integration


class _Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[bytes] = []


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver  # HTTP/1.0: the connection closes after the answer

    def do_POST(self) -> None:
        self.server.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def reactor() -> Iterator[SelectReactor]:
    reactor = SelectReactor()
    thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False},
                              daemon=True)
    thread.start()
    yield reactor
    reactor.callFromThread(reactor.stop)
    thread.join(10)


def test_back_to_back_posts_to_a_receiver_that_closes_each_connection(
        reactor: SelectReactor) -> None:
    receiver = _Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    poster = blockingCallFromThread(reactor, AgentPoster, reactor)
    try:
        statuses: list[int] = []
        for i in range(40):  # each right after the previous answer: the stale-connection race
            def post(i: int = i) -> Deferred[int]:
                return poster.post(url, b'{"n": %d}' % i, {"Content-Type": "application/json"})
            statuses.append(blockingCallFromThread(reactor, post))
        assert statuses == [204] * 40
        assert receiver.bodies == [b'{"n": %d}' % i for i in range(40)]
    finally:
        blockingCallFromThread(reactor, poster.close)
        receiver.shutdown()
