"""Typed SIP protocol errors that carry the status to answer with (h11 ``RemoteProtocolError``).

A malformed datagram is answered (requests) or dropped (responses) and never affects the next
one: the parser raises :class:`ParseError` and nothing else, and the status on the error is the
one RFC 3261 (and RFC 4475 for the corner cases) says to answer with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sipdial.sip.message import Request

__all__ = ["ParseError", "SipError"]


class SipError(Exception):
    """Protocol error that carries the SIP status to answer with (h11-style).

    ``str(error)`` is a short human explanation, suitable for a log line or a ``Warning``
    header; it never contains the offending bytes verbatim beyond a short excerpt.
    """

    status: int

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ParseError(SipError):
    """A message that could not be parsed or violates RFC 3261 framing/mandatory headers.

    ``status`` is 400 in general, 505 for an unsupported SIP version and 413 for a message
    larger than :data:`sipdial.sip.message.MAX_MESSAGE_SIZE`.

    ``request`` is a best-effort :class:`~sipdial.sip.message.Request` when the message was a
    request whose Via, From and To were readable and that has a Call-ID and a CSeq (copied
    verbatim, so an out-of-range CSeq number can still be answered), so that the caller can
    build the error response with :func:`~sipdial.sip.message.make_response`; otherwise
    ``None`` (responses are never answered, they are dropped).
    """

    request: Request | None

    def __init__(self, message: str, status: int = 400, request: Request | None = None) -> None:
        super().__init__(message, status)
        self.request = request
