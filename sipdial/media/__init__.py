"""sipdial's own media: the "press 1" prompt, ringback/busy tones and DTMF detection.

Codecs: PCMU (PT 0) and PCMA (PT 8), 8 kHz, 20 ms frames of 160 samples (160 bytes);
telephone-event (RFC 4733) on PT 101 by default, the PT the peer offered wins.

What other rooms use:

* :class:`MediaManager` (:mod:`.transport`, a Twisted adapter) — one RTP port per
  call: ``open(key, on_digit)`` -> our (host, port) for the SDP, ``set_remote`` from the
  peer's answer, ``play_prompt``/``play_tone`` (or ``play(key, frames)``), ``stop_playing``,
  ``close``. :class:`MediaPortsExhausted` when the ``[media]`` port range is used up.
* :class:`MediaProcess` (:mod:`.remote`) — the same for the SIP process while the RTP itself
  runs in a media process of its own (:mod:`.process`, a MediaManager there): the default.
* :class:`PromptLibrary` (:mod:`.prompt`) — every prompt clip and tone decoded and encoded
  ONCE at start-up (:class:`PromptError` if a clip is missing); per call only lists of
  references to those frames: ``confirm_prompt(number, language, pt)``, ``clip``, ``tone``.
* :func:`digit_from_info` (:mod:`.dtmf`) — the key a SIP INFO request carries.

Everything except :mod:`.transport`, :mod:`.remote` and :mod:`.process` is sans-IO (no
sockets, time passed in): :mod:`.g711` (codec tables), :mod:`.rtp`
(:class:`~.rtp.RtpSender`, ``parse_rtp``), :mod:`.player` (ONE 20 ms tick for every stream),
:mod:`.dtmf` (RFC 4733, SIP INFO, in-band Goertzel detection).
"""

from sipdial.media.dtmf import digit_from_info
from sipdial.media.ports import MediaPortsExhausted
from sipdial.media.prompt import PromptError, PromptLibrary
from sipdial.media.remote import MediaProcess
from sipdial.media.rtp import PCMA, PCMU, SAMPLES_PER_FRAME, TELEPHONE_EVENT
from sipdial.media.transport import MediaManager

__all__ = [
    "PCMA",
    "PCMU",
    "SAMPLES_PER_FRAME",
    "TELEPHONE_EVENT",
    "MediaManager",
    "MediaPortsExhausted",
    "MediaProcess",
    "PromptError",
    "PromptLibrary",
    "digit_from_info",
]
