"""Answering the user's phone inside sipdial's own dialog with it ("in kind").

While sipdial holds a dialog with the user's phone (before and during the prompt, and in
REFER mode until the transfer is done) the phone may send requests that need an answer but
change nothing in the call: a re-INVITE or UPDATE to hold its first call before it transfers,
an OPTIONS ping, a NOTIFY outside a transfer, DTMF as SIP INFO. :class:`PhoneSession` answers
them and keeps sipdial's SDP session towards the phone consistent (RFC 3264 §8: same ``o=``
session, version one higher per new offer).
"""

from __future__ import annotations

from sipdial.calls.legs import PeerRequest
from sipdial.media import digit_from_info
from sipdial.sip import sdp
from sipdial.ua import UserAgent

__all__ = ["PhoneSession"]


class PhoneSession:
    def __init__(self, ua: UserAgent, session_id: int,
                 media_at: tuple[str, int] | None, sink: tuple[str, int]) -> None:
        self.ua = ua
        self.session_id = session_id
        self.version = 1
        #: where the phone sends its audio: sipdial's RTP port for the call, or the sink
        self.media_at = media_at or sink

    def answer(self, event: PeerRequest, now: float) -> str | None:
        """Answer ``event``; returns the digit of a DTMF INFO, if it carried one."""
        request, txn, leg = event.request, event.txn, event.leg
        endpoint = self.ua.endpoint
        method = request.method
        if method in ("NOTIFY", "OPTIONS") or (method == "UPDATE" and not request.body):
            endpoint.reply(txn, 200, now)  # e.g. a session refresh: no offer, no answer
        elif method in ("INVITE", "UPDATE"):
            # e.g. the phone holds its first call before it transfers: answer in kind
            self.version += 1
            offer = sdp.audio_offer(*self.media_at, session_id=self.session_id,
                                    version=self.version,
                                    direction=sdp.answer_direction(request.body))
            endpoint.reply(txn, 200, now, headers=[
                ("Contact", leg.contact),
                ("Content-Type", sdp.CONTENT_TYPE)], body=offer)
        elif method == "INFO":
            endpoint.reply(txn, 200, now)
            return digit_from_info(request.headers.get("Content-Type"), request.body)
        else:
            endpoint.reply(txn, 501, now)
        return None
