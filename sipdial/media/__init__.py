"""sipdial's own media: the "press 1" prompt, ringback/busy tones and DTMF detection."""

from sipdial.media.transport import MediaManager, MediaPortsExhausted

__all__ = ["MediaManager", "MediaPortsExhausted"]
