"""The media process: ``python -m sipdial.media.process --fd N`` (started by
:class:`sipdial.media.remote.MediaProcess`, never by hand).

It runs a :class:`.MediaManager` on its own reactor: the shared 20 ms tick, the RTP sockets
the SIP process passes over the control stream (fd ``N``), DTMF detection, whose digits go
back up the stream. It exits when the stream closes (the SIP process stopped or died) and,
on Linux, when its parent dies. See :mod:`sipdial.media.remote` for the why and the wire
format.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet import protocol
from twisted.internet.interfaces import IFileDescriptorReceiver
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

from sipdial.media.prompt import PromptError, PromptLibrary
from sipdial.media.remote import OneProtocol
from sipdial.media.transport import MediaManager
from sipdial.pdeathsig import die_with_parent

log = logging.getLogger("sipdial.media")

PHASES = 5  #: sub-slots of the 20 ms packet time (sipdial.media.player.Player)
MAX_LINE = 65536  #: a longer command line from the SIP process is a bug: the stream is closed


@implementer(IFileDescriptorReceiver)
class Control(protocol.Protocol):
    """The media process's end of the control stream: commands in, digits out."""

    def __init__(self, manager: MediaManager, on_lost: Any = None) -> None:
        self.manager = manager
        self.on_lost = on_lost
        self._buffer = b""
        # descriptors arrive with a byte at or before their "open" line: first in, first used
        self._fds: collections.deque[int] = collections.deque()

    def fileDescriptorReceived(self, descriptor: int) -> None:
        self._fds.append(descriptor)

    def dataReceived(self, data: bytes) -> None:
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        if len(self._buffer) > MAX_LINE:
            log.error("control stream: a line over %d bytes; closing", MAX_LINE)
            transport: Any = self.transport
            transport.loseConnection()
            return
        for line in lines:
            try:
                self._command(json.loads(line))
            except Exception:  # one bad command must not stop the others' audio
                log.exception("media command %r failed", line[:200])

    def _command(self, message: list[Any]) -> None:
        op, key, *args = message
        manager = self.manager
        if op == "open":
            fd = self._fds.popleft()
            try:
                manager.adopt(key, fd, int(args[0]), self._digit)
            finally:
                os.close(fd)
        elif op == "remote":
            host, port, pt, event_pt = args
            manager.set_remote(key, host, int(port), int(pt), event_pt)
        elif op == "prompt":
            manager.play_prompt(key, args[0], args[1])
        elif op == "tone":
            manager.play_tone(key, args[0], loop=bool(args[1]))
        elif op == "stop":
            manager.stop_playing(key)
        elif op == "close":
            # always answered, known key or not: the SIP process holds its copy until then
            try:
                manager.close(key)
            finally:
                self._send(["closed", int(args[0])])
        else:
            raise ValueError(f"unknown media command {op!r}")

    def _digit(self, key: str, digit: str, how: str) -> None:
        self._send(["digit", key, digit, how])

    def _send(self, message: list[Any]) -> None:
        transport: Any = self.transport
        transport.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.manager.stop()
        while self._fds:
            os.close(self._fds.popleft())
        if self.on_lost is not None:
            self.on_lost()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sipdial-media")
    parser.add_argument("--fd", type=int, required=True, help="the control stream (inherited)")
    parser.add_argument("--host", required=True, help="the address the RTP sockets are on")
    parser.add_argument("--name", default="media", help="how log lines are marked")
    parser.add_argument("--prompt-file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("SIPDIAL_LOG", "INFO"),
                        format=f"%(asctime)s %(levelname)s [{args.name}] %(name)s: %(message)s")
    die_with_parent()
    # Ctrl-C reaches the whole process group: the SIP process decides when this one ends
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        prompts = PromptLibrary.load(custom_file=args.prompt_file)
    except PromptError as exc:
        print(f"sipdial media: {exc}", file=sys.stderr)
        return 2
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    # a tick every 4 ms, each sending a fifth of the streams (sipdial.media.player)
    manager = MediaManager(reactor, args.host, 0, 0, prompts, phases=PHASES)
    control = Control(manager, on_lost=reactor.stop)
    reactor.adoptStreamConnection(args.fd, socket.AF_UNIX, OneProtocol(control))
    os.close(args.fd)
    gc.freeze()  # the prompt library: decoded once, never garbage
    reactor.run(installSignalHandlers=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
