"""Where the lab's nodes live: one network namespace each on a bridge, or loopback ports.

:func:`netns_available` says whether namespaces can be made here (root, ``ip netns``).
:class:`NetnsNetwork` makes ``sdl<pid>-hub`` holding a bridge and one namespace per node, each
with a veth ``eth0`` on that bridge (10.77.N.0/24, N the first subnet the host does not use),
plus a veth from the host into the bridge (``sdl<pid>h``, address .1), so that curl on the host
reaches sipdial's API. Every name carries the lab's process id: :func:`remove_stale` deletes
the namespaces and host links of lab runs whose process is gone (a crashed or killed run).
:class:`LoopbackNetwork` gives every node 127.0.0.1 and its own free ports instead.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

log = logging.getLogger("lab.net")

PREFIX = "sdl"
_NAME = re.compile(rf"^{PREFIX}(\d+)-(\w+)$")
_HOST_LINK = re.compile(rf"^{PREFIX}(\d+)h(?:@\S+)?$")
#: the nodes, with their host part in the lab subnet
HOSTS = {"kam": 2, "sd": 3, "p201": 11, "p202": 12, "dest": 20}
HOST_ADDRESS = 1


class NetworkError(Exception):
    """A namespace or link could not be made; the message says which command failed."""


@dataclass(frozen=True, slots=True)
class Node:
    """One node of the lab: its address, and the namespace its processes run in (or None)."""

    name: str
    ip: str
    netns: str | None

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this node's namespace (as is on loopback)."""
        if self.netns is None:
            return argv
        return ["ip", "netns", "exec", self.netns, *argv]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15,
                          check=False)
    if check and done.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def netns_available() -> bool:
    """Root with ``ip`` (iproute2) and network namespaces: the namespaced lab can run."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"{PREFIX}{os.getpid()}-probe"
    if _ip("netns", "add", probe, check=False).returncode != 0:
        return False
    _ip("netns", "del", probe, check=False)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lab_namespaces(pid: int | None = None) -> list[str]:
    """The namespaces of lab runs (of the run with process id ``pid`` when given)."""
    done = _ip("netns", "list", check=False)
    names = [line.split()[0] for line in done.stdout.splitlines() if line.strip()]
    return [n for n in names if (m := _NAME.match(n)) and (pid is None or int(m[1]) == pid)]


def _host_links() -> list[tuple[str, int]]:
    done = _ip("-o", "link", "show", check=False)
    links = []
    for line in done.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2 and (m := _HOST_LINK.match(parts[1].strip())):
            links.append((parts[1].strip().split("@")[0], int(m[1])))
    return links


def kill_namespace_processes(netns: str, grace: float = 3.0) -> None:
    """SIGTERM then SIGKILL whatever still runs in ``netns``: nothing is left behind."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [int(p) for p in _ip("netns", "pids", netns, check=False).stdout.split()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _ip("netns", "pids", netns,
                                                  check=False).stdout.strip():
            time.sleep(0.05)


def remove_stale() -> list[str]:
    """Delete namespaces and host links of lab runs whose process is gone; their names."""
    removed = []
    for netns in lab_namespaces():
        m = _NAME.match(netns)
        if m and not _alive(int(m[1])):
            kill_namespace_processes(netns)
            _ip("netns", "del", netns, check=False)
            removed.append(netns)
    for link, pid in _host_links():
        if not _alive(pid):
            _ip("link", "del", link, check=False)
            removed.append(link)
    return removed


def _free_subnet() -> int:
    used = _ip("-4", "-o", "addr", "show", check=False).stdout
    routes = _ip("-4", "route", "show", check=False).stdout
    for n in range(1, 255):
        if f"10.77.{n}." not in used and f"10.77.{n}." not in routes:
            return n
    raise NetworkError("no free 10.77.N.0/24 subnet on this host")


class NetworkNodes:
    """What both networks give: the nodes by name, ports, and :meth:`close`."""

    nodes: dict[str, Node]
    host_ip: str  #: where the host reaches the nodes (curl, ctrl_tcp)

    def port(self, name: str, default: int) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class NetnsNetwork(NetworkNodes):
    """A namespace per node on one bridge; standard ports everywhere (5060, 8080)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.hub = f"{PREFIX}{self.pid}-hub"
        self.host_link = f"{PREFIX}{self.pid}h"
        self.created: list[str] = []
        self.nodes = {}
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        subnet = _free_subnet()
        self.host_ip = f"10.77.{subnet}.{HOST_ADDRESS}"
        _ip("netns", "add", self.hub)
        self.created.append(self.hub)
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        for name, host in HOSTS.items():
            netns = f"{PREFIX}{self.pid}-{name}"
            _ip("netns", "add", netns)
            self.created.append(netns)
            ip = f"10.77.{subnet}.{host}"
            _ip("link", "add", "eth0", "netns", netns, "type", "veth",
                "peer", "name", name, "netns", self.hub)
            _ip("-n", self.hub, "link", "set", name, "master", "br0", "up")
            _ip("-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            self.nodes[name] = Node(name, ip, netns)
        _ip("link", "add", self.host_link, "type", "veth", "peer", "name", "host",
            "netns", self.hub)
        _ip("-n", self.hub, "link", "set", "host", "master", "br0", "up")
        _ip("addr", "add", f"{self.host_ip}/24", "dev", self.host_link)
        _ip("link", "set", self.host_link, "up")

    def port(self, name: str, default: int) -> int:
        return default

    def close(self) -> None:
        for netns in reversed(self.created):
            kill_namespace_processes(netns)
        _ip("link", "del", self.host_link, check=False)
        for netns in reversed(self.created):
            _ip("netns", "del", netns, check=False)
        self.created.clear()


def _free_port() -> int:
    """Free on UDP and TCP at 127.0.0.1 (SIP listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            if all(_tcp_free(p) for p in (port, port + 1)):  # baresip: TLS on port + 1
                return port
    raise NetworkError("no port free on both UDP and TCP at 127.0.0.1")


def _tcp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        try:
            tcp.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class LoopbackNetwork(NetworkNodes):
    """Everyone on 127.0.0.1, each listener on its own free port."""

    def __init__(self) -> None:
        self.host_ip = "127.0.0.1"
        self.nodes = {name: Node(name, "127.0.0.1", None) for name in HOSTS}
        self._ports: dict[tuple[str, int], int] = {}

    def port(self, name: str, default: int) -> int:
        """A free port for ``name``'s listener ``default`` (the same one when asked again)."""
        key = (name, default)
        if key not in self._ports:
            port = _free_port()
            while port in self._ports.values():
                port = _free_port()
            self._ports[key] = port
        return self._ports[key]

    def close(self) -> None:
        return None
