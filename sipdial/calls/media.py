
"""One call's use of sipdial's own RTP: the "press 1" prompt, tones and DTMF.

The calls layer does no I/O: it talks to sipdial's RTP through :class:`MediaPort` (implemented
by :class:`sipdial.media.MediaManager`, a Twisted adapter) and takes audio frames from
:class:`PromptSource` (:class:`sipdial.media.PromptLibrary`). :class:`CallMedia` is what a
click-to-dial call holds: its RTP port's address for the SDP, the codec the phone chose, and
the few things a call does with them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Protocol

from sipdial.sip import MediaAnswer

__all__ = ["CallMedia", "DigitSource", "MediaPort", "OnDigit", "PromptSource", "Tone"]


class Tone(enum.StrEnum):
    RINGBACK = "ringback"
    BUSY = "busy"
    FAILURE = "failure"


class DigitSource(enum.StrEnum):
    RFC4733 = "rfc4733"
    INBAND = "inband"
    INFO = "info"


#: on_digit(call id, digit, how it arrived)
OnDigit = Callable[[str, str, str], None]


class MediaPort(Protocol):
    """sipdial's RTP, one port per call id (:class:`sipdial.media.MediaManager`)."""

    def open(self, key: str, on_digit: OnDigit) -> tuple[str, int]:
        """Bind a port; returns (host, port) for the SDP. Raises MediaPortsExhausted."""
        ...

    def set_remote(self, key: str, host: str, port: int, payload_type: int,
                   event_pt: int | None) -> None: ...

    def play_prompt(self, key: str, number: str, language: str) -> None:
        """Play "to connect to <number>, press 1" in the payload type ``set_remote`` gave."""
        ...

    def play_tone(self, key: str, tone: Tone, *, loop: bool) -> None:
        """Play a call-progress tone (one cadence cycle; ``loop``: until stopped)."""
        ...

    def stop_playing(self, key: str) -> None: ...

    def close(self, key: str) -> None: ...


class PromptSource(Protocol):
    """Pre-encoded audio frames (:class:`sipdial.media.PromptLibrary`): here only to know how
    long a prompt lasts; the frames are sent by the :class:`MediaPort` (maybe in another
    process, which has its own copy of the library)."""

    def confirm_prompt(self, number: str, language: str,
                       payload_type: int) -> Sequence[bytes]: ...


FRAME_SECONDS = 0.020


class CallMedia:
    """A call's RTP port: opened before the phone is rung, closed when the call no longer
    needs sipdial in the media path."""

    def __init__(self, port: MediaPort, prompts: PromptSource, key: str) -> None:
        self._port = port
        self._prompts = prompts
        self.key = key
        self.address: tuple[str, int] | None = None
        self.payload_type = 0  # PCMU until the phone's answer says otherwise
        self._remote = False

    def open(self, on_digit: OnDigit) -> tuple[str, int]:
        self.address = self._port.open(self.key, on_digit)
        return self.address

    def point_at(self, answer: MediaAnswer) -> None:
        """Send to the phone's RTP in the codec its answer chose (RFC 3264)."""
        self.payload_type = answer.payload_type
        self._port.set_remote(self.key, answer.host, answer.port, answer.payload_type,
                              answer.event_payload_type)
        self._remote = True

    def play_prompt(self, number: str, language: str) -> float:
        """Play "to connect to <number>, press 1"; returns how long it lasts (seconds)."""
        frames = self._prompts.confirm_prompt(number, language, self.payload_type)
        self._port.play_prompt(self.key, number, language)
        return len(frames) * FRAME_SECONDS

    def play_tone(self, tone: Tone, *, loop: bool = True) -> bool:
        """Play a call-progress tone; False when there is nowhere to play it."""
        if not self._remote:
            return False
        self._port.play_tone(self.key, tone, loop=loop)
        return True

    def stop_playing(self) -> None:
        self._port.stop_playing(self.key)

    def close(self) -> None:
        self._port.close(self.key)
        self._remote = False
