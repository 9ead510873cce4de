"""A worker process's place under ``sipdial serve --workers`` (the design: sipdial.workers).

:class:`WorkerRole` is what the supervisor tells a worker (its index, the mesh directory,
the ports worker 0 bound, the shared digest secret); :func:`worker_store_path` its own
SQLite file; :class:`WorkerHttp` how it asks the other workers about their calls
(:class:`sipdial.api.OtherWorkers`). The app (sipdial.app) wires these; the supervisor
(sipdial.workers) only starts processes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, fail

from sipdial.api import WorkerReply
from sipdial.sip import Shard

__all__ = ["FORWARD_TIMEOUT", "WorkerHttp", "WorkerRole", "worker_store_path"]

#: seconds another worker has to answer a request handed to it (then: 503 / left out)
FORWARD_TIMEOUT = 5.0


@dataclass(frozen=True)
class WorkerRole:
    """This process is worker ``index`` of ``count`` under a supervisor."""

    index: int
    count: int
    mesh_dir: str  #: the supervisor's private directory: mesh sockets and ready files
    secret: bytes  #: the digest nonce secret every worker shares
    #: ports worker 0 bound, by [sip] listen entry ("udp:127.0.0.1:0" -> 40123); empty for
    #: worker 0's first start
    sip_ports: dict[str, int] = field(default_factory=dict)
    http_port: int | None = None  #: the shared API port (None: [http] listen as written)
    #: the highest event and delivery ids in any worker's file when the supervisor started:
    #: ids continue above them, also when the number of workers changed
    id_floor: tuple[int, int] = (0, 0)
    #: restarted while the others run: their registrations are current, not this worker's
    #: file (bindings removed meanwhile would come back from it); they send theirs
    rejoin: bool = False

    @property
    def shard(self) -> Shard:
        return Shard(self.index, self.count)

    def ready_file(self, index: int | None = None) -> str:
        return os.path.join(self.mesh_dir, f"w{self.index if index is None else index}.ready")


def worker_store_path(path: str, index: int) -> str:
    """Worker ``index``'s own SQLite file: worker 0 the configured one (so going from one
    process to several keeps its registrations, pending webhooks and unfinished calls), the
    others beside it: ``calls.w1.db``."""
    if index == 0 or path == ":memory:" or path.startswith("file:"):
        return path
    root, ext = os.path.splitext(path)
    return f"{root}.w{index}{ext or '.db'}"


class WorkerHttp:
    """:class:`sipdial.api.OtherWorkers` over each worker's loopback HTTP port (named in its
    ready file in the mesh directory, read again after a failure: a restart moves it)."""

    def __init__(self, reactor: Any, role: WorkerRole) -> None:
        from twisted.web.client import Agent, HTTPConnectionPool

        self._reactor = reactor
        self._role = role
        self._shard = role.shard
        self._ports: dict[int, int] = {}
        pool: Any = HTTPConnectionPool(reactor, persistent=True)  # type: ignore[no-untyped-call]
        pool.maxPersistentPerHost = 4
        self._pool = pool
        self._agent: Any = Agent(reactor, connectTimeout=5, pool=pool)  # type: ignore[no-untyped-call]

    def owner_of(self, call_id: str) -> int | None:
        owner = self._shard.owner_of(call_id)
        return None if owner == self._role.index else owner

    def others(self) -> Sequence[int]:
        return [w for w in range(self._role.count) if w != self._role.index]

    def index(self) -> int:
        return self._role.index

    def primary(self) -> int | None:
        return 0 if self._role.index != 0 else None

    def _port(self, worker: int) -> int:
        port = self._ports.get(worker)
        if port is None:
            with open(self._role.ready_file(worker), encoding="utf-8") as fh:
                port = int(json.load(fh)["private_http"])
            self._ports[worker] = port
        return port

    def request(self, worker: int, method: str, target: str,
                authorization: str | None,
                extra: Mapping[str, str] | None = None) -> Deferred[WorkerReply]:
        from twisted.web.client import readBody
        from twisted.web.http_headers import Headers

        try:
            port = self._port(worker)
        except (OSError, ValueError, KeyError) as exc:
            return fail(exc)
        headers = Headers()
        if authorization is not None:
            headers.addRawHeader(b"Authorization", authorization.encode("latin-1"))
        for name, value in (extra or {}).items():
            headers.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
        url = f"http://127.0.0.1:{port}{target}".encode("latin-1")
        # only GET and DELETE are handed over: no body
        d: Deferred[Any] = self._agent.request(method.encode("ascii"), url, headers, None)

        def got(response: Any) -> Deferred[WorkerReply]:
            passed = tuple((name, value) for name in ("WWW-Authenticate", "Retry-After",
                                                      "Location")
                           for value in response.headers.getRawHeaders(name, []))
            status = int(response.code)
            body: Deferred[bytes] = readBody(response)
            return body.addCallback(lambda data: WorkerReply(status, data, passed))

        def failed(failure: Any) -> Any:
            self._ports.pop(worker, None)  # restarted elsewhere: read its ready file again
            return failure

        d.addTimeout(FORWARD_TIMEOUT, self._reactor)  # alive but stalled: 503 as if down
        return d.addCallback(got).addErrback(failed)

    def close(self) -> Deferred[None]:
        d: Deferred[None] = self._pool.closeCachedConnections()
        return d
