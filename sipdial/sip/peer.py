"""Where a SIP message comes from or goes to: transport plus address."""

from __future__ import annotations

from dataclasses import dataclass, field

RELIABLE = frozenset({"tcp", "tls", "ws", "wss", "sctp"})


@dataclass(frozen=True, slots=True)
class Peer:
    """A transport endpoint.

    For UDP it is the remote socket address. For TCP it names the connection's remote end;
    the transport adapter keeps the map from Peer to open connection.
    """

    transport: str  # "udp" | "tcp" | "tls"
    host: str  # IPv6 without brackets
    port: int
    #: for TLS: the host name the server's certificate must match (RFC 5922 §4: the host of
    #: the URI that led here, before DNS); empty: ``host``. Not part of the peer's identity
    #: (equality, hash): one connection per address.
    name: str = field(default="", compare=False)

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE

    def host_port(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.transport}:{self.host_port()}"
