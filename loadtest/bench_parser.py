"""Parse and serialise throughput of sipdial's message layer for realistic messages.

    .venv/bin/python -m loadtest.bench_parser [--count 20000] [--max-seconds 60]

For an INVITE with SDP (as a desk phone sends it), the 200 OK answering it (with SDP, two
Vias) and a REGISTER with digest credentials, prints messages per second of CPU
(time.process_time) for: ``parse_message`` (which also parses and caches Via, From, To, CSeq
and checks Contact, as the endpoint relies on), ``to_bytes`` of the parsed message, the two
together, and for the INVITE ``make_response(invite, 180)`` + ``to_bytes`` (what a server
does per request). Each measurement runs ``--count`` times (in chunks, stopping early when
``--max-seconds`` of wall clock have passed) after a short warm-up; it measures, asserts
nothing.
"""

# ruff: noqa: E501  (the sample messages have header lines as long as real phones send)
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable
from functools import partial

from sipdial.sip.message import Request, make_response, parse_message

clock = time.process_time


def _crlf(text: str, body: str = "") -> bytes:
    head = "\r\n".join(line.strip() for line in text.strip().splitlines())
    body_bytes = "\r\n".join(body.strip().splitlines()).encode() + (b"\r\n" if body else b"")
    return (head.replace("@LEN@", str(len(body_bytes))) + "\r\n\r\n").encode() + body_bytes


SDP = """
v=0
o=- 1700000000 1700000000 IN IP4 192.168.1.10
s=SDP data
c=IN IP4 192.168.1.10
t=0 0
m=audio 11780 RTP/AVP 9 0 8 18 101
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=ptime:20
a=sendrecv
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
"""

INVITE = _crlf("""
INVITE sip:+4930123456@sip.example.com:5060;x-c2d=7c0d3f1e9a6b4c2d8e5f0a1b2c3d4e5f SIP/2.0
Via: SIP/2.0/UDP 192.168.1.10:5062;branch=z9hG4bK1820614937;rport
From: "Alice Example" <sip:201@sip.example.com:5060>;tag=3145916052
To: <sip:+4930123456@sip.example.com:5060>
Call-ID: 0_2398371840@192.168.1.10
CSeq: 2 INVITE
Contact: <sip:201@192.168.1.10:5062>
Proxy-Authorization: Digest username="201", realm="sip.example.com", nonce="MTcwMDAwMDAwMC4wOjNkNWUxMjM0NTY3ODlhYmNkZWYw", uri="sip:+4930123456@sip.example.com:5060;x-c2d=7c0d3f1e9a6b4c2d8e5f0a1b2c3d4e5f", response="6629fae49393a05397450978507c4ef1", algorithm=MD5, cnonce="0a4f113b", qop=auth, nc=00000001
Referred-By: <sip:201@sip.example.com>
Content-Type: application/sdp
Allow: INVITE, INFO, PRACK, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REGISTER, SUBSCRIBE, REFER, PUBLISH, UPDATE, MESSAGE
Max-Forwards: 70
User-Agent: Yealink SIP-T46S 66.86.0.15
Allow-Events: talk,hold,conference,refer,check-sync
Supported: replaces
Content-Length: @LEN@
""", SDP)  # fmt: skip

OK = _crlf("""
SIP/2.0 200 OK
Via: SIP/2.0/UDP 127.0.0.1:5060;rport=5060;branch=z9hG4bKa81c52e09f3b1;received=127.0.0.1
Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK776asdhds;received=10.0.0.5
Record-Route: <sip:10.0.0.1;lr>
From: "+4930123456" <sip:+4930123456@sip.example.com>;tag=5f2a9c1d3e
To: "Alice Example" <sip:201@sip.example.com>;tag=1418773924
Call-ID: 5f2a9c1d-3e-8b7a6c5d@sipdial
CSeq: 1 INVITE
Contact: <sip:201@192.168.1.10:5062>
Supported: replaces, 100rel, timer
Allow: INVITE, INFO, PRACK, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REGISTER, SUBSCRIBE, REFER, PUBLISH, UPDATE, MESSAGE
Server: Yealink SIP-T46S 66.86.0.15
Content-Type: application/sdp
Content-Length: @LEN@
""", SDP)  # fmt: skip

REGISTER = _crlf("""
REGISTER sip:sip.example.com:5060 SIP/2.0
Via: SIP/2.0/UDP 192.168.1.10:5062;branch=z9hG4bK1374089419;rport
From: "Alice Example" <sip:201@sip.example.com:5060>;tag=2683216357
To: "Alice Example" <sip:201@sip.example.com:5060>
Call-ID: 1_1926410932@192.168.1.10
CSeq: 2 REGISTER
Contact: <sip:201@192.168.1.10:5062>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-805ec0a1b2c3>";reg-id=1
Authorization: Digest username="201", realm="sip.example.com", nonce="MTcwMDAwMDAwMC4wOjNkNWUxMjM0NTY3ODlhYmNkZWYw", uri="sip:sip.example.com:5060", response="c3f7d3b8a1e2f4a5b6c7d8e9f0a1b2c3", algorithm=MD5, cnonce="1b5a", qop=auth, nc=00000001
Max-Forwards: 70
User-Agent: Yealink SIP-T46S 66.86.0.15
Expires: 3600
Allow: INVITE, INFO, PRACK, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REGISTER, SUBSCRIBE, REFER, PUBLISH, UPDATE, MESSAGE
Allow-Events: talk,hold,conference,refer,check-sync
Content-Length: 0
""")  # fmt: skip

MESSAGES = {"INVITE": INVITE, "200 OK": OK, "REGISTER": REGISTER}


def _roundtrip(data: bytes) -> bytes:
    return parse_message(data).to_bytes()


def _respond(request: Request) -> bytes:
    return make_response(request, 180, to_tag="a1b2").to_bytes()


def measure(fn: Callable[[], object], count: int, deadline: float) -> tuple[int, float]:
    """Run ``fn`` ``count`` times (chunks of 1000, stopping at ``deadline``): (runs, CPU s)."""
    for _ in range(min(200, count)):
        fn()  # warm-up
    done = 0
    start = clock()
    while done < count and time.monotonic() < deadline:
        n = min(1000, count - done)
        for _ in range(n):
            fn()
        done += n
    return done, clock() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000, help="runs per measurement")
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="wall-clock guard for the whole benchmark (default 60)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be >= 1")
    deadline = time.monotonic() + args.max_seconds
    print(f"bench_parser {time.strftime('%Y-%m-%d')}: Python {sys.version.split()[0]}, "
          f"nproc {os.cpu_count()}, {args.count} runs each, CPU time (process_time)")
    print(f"{'message':10} {'bytes':>5}  {'what':24} {'µs':>7} {'messages/s':>11}")
    gc.collect()
    stopped = False
    for name, data in MESSAGES.items():
        message = parse_message(data)
        assert parse_message(message.to_bytes()).to_bytes() == message.to_bytes()
        cases: list[tuple[str, Callable[[], object]]] = [
            ("parse", partial(parse_message, data)),
            ("serialise (to_bytes)", message.to_bytes),
            ("parse + serialise", partial(_roundtrip, data)),
        ]
        if isinstance(message, Request):
            cases.append(("make_response + to_bytes", partial(_respond, message)))
        for what, fn in cases:
            runs, cpu = measure(fn, args.count, deadline)
            stopped = stopped or runs < args.count
            if runs:
                print(f"{name:10} {len(data):5}  {what:24} {1e6 * cpu / runs:7.1f} "
                      f"{runs / cpu:11,.0f}")
    if stopped:
        print("STOPPED BY --max-seconds: some measurements ran fewer times")


if __name__ == "__main__":
    main()
