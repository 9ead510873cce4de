"""Which worker process owns a SIP message (sans-IO).

``sipdial serve --workers N`` runs N worker processes behind one SIP address (a UDP socket
each, bound with ``SO_REUSEPORT``: the kernel hands each source address:port to one worker)
and one HTTP port (likewise; see :mod:`sipdial.workers` for the whole design). A call is
owned by the worker that started it, and every identifier that worker makes carries its
index in its first two hex digits (:meth:`Shard.prefix`):

* the Via ``branch`` of its requests (``z9hG4bK`` + the index ...): a **response** is
  routed by its top Via's branch;
* its dialog tags (From tag of the calls it places, To tag of the calls it answers): an
  **in-dialog request** is routed by its To tag — the phone's BYE, re-INVITE, NOTIFY, ACK
  for a 2xx;
* its Call-IDs and the click-to-dial call id: the **referred INVITE** of a REFER-mode call
  (a new dialog the phone starts) is routed by the ``x-c2d`` parameter that the REFER's
  Refer-To put into its Request-URI;
* any other INVITE, and CANCEL and the ACK of a non-2xx (which carry their INVITE's Call-ID),
  go to the worker the Call-ID hashes to (CRC-32 modulo the count): a phone's retransmission
  or CANCEL finds its transaction even when the kernel's choice of socket changed meanwhile
  (it does whenever a worker stops or starts);
* everything else — REGISTER, OPTIONS, ... — is handled by whichever worker received it.

:meth:`Shard.route` reads only what that needs from the raw bytes (a few anchored regular
expressions over the header block, no full parse); a message whose marks do not name a
live worker index is handled where it arrived, like any message with an unknown tag. A
single process (``Shard.count == 1``) makes the same identifiers as before (all random)
and routes nothing.

The same marks extend to several machines behind a dispatcher (Kamailio ``dispatcher``
hashing the Call-ID of new calls, responses and in-dialog requests following Via and
Record-Route/Contact to the worker that made them): a worker's own address then carries
what the index carries here.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass
from typing import Final

__all__ = ["SINGLE", "Shard"]

#: the header block: up to the first empty line (a datagram without one is all headers)
_END_OF_HEADERS: Final = b"\r\n\r\n"
#: RFC 3261 §20.42 / §7.3.3: "Via" or its compact form "v", at the start of a header line.
#: The first match is the top Via header field; its first value's branch is the top branch.
_VIA_BRANCH: Final = re.compile(
    rb"^(?:via|v)[ \t]*:[^\r\n,]*?;[ \t]*branch[ \t]*=[ \t]*z9hG4bK([0-9a-f]{2})",
    re.IGNORECASE | re.MULTILINE)
#: §20.39: "To" / "t", its tag parameter (a quoted display name holding ";tag=" can only
#: mis-route a message to a worker that answers it 481, as an unknown tag is answered)
_TO_TAG: Final = re.compile(
    rb"^(?:to|t)[ \t]*:[^\r\n]*?;[ \t]*tag[ \t]*=[ \t]*([0-9a-f]{2})",
    re.IGNORECASE | re.MULTILINE)
#: the Request-URI's x-c2d parameter (clicktodial.C2D_PARAM), in the request line only
_C2D: Final = re.compile(rb"^[^ \r\n]+ [^ \r\n]*;x-c2d=([0-9a-f]{2})", re.IGNORECASE)
#: §20.8: "Call-ID" / "i", its value without the surrounding whitespace
_CALL_ID: Final = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*$",
                             re.IGNORECASE | re.MULTILINE)
#: requests that open a transaction a CANCEL or a non-2xx ACK will name (by Call-ID)
_BY_CALL_ID: Final = (b"INVITE ", b"CANCEL ", b"ACK ")


@dataclass(frozen=True, slots=True)
class Shard:
    """This process's place among the workers: ``index`` of ``count`` (0 ≤ index < count)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= 256 or not 0 <= self.index < self.count:
            raise ValueError(f"worker {self.index} of {self.count}: out of range")

    @property
    def sharded(self) -> bool:
        return self.count > 1

    def prefix(self, hex_digits: int) -> str:
        """A random hex string of ``hex_digits`` for identifiers that are routed back to
        this worker: its first two digits are the worker index (when there are workers)."""
        random = os.urandom((hex_digits + 1) // 2).hex()[:hex_digits]
        if not self.sharded:
            return random
        return f"{self.index:02x}{random[2:]}"

    def owner_of(self, identifier: str) -> int | None:
        """The worker an identifier made by :meth:`prefix` belongs to (None: not a worker's,
        or no workers)."""
        if not self.sharded or len(identifier) < 2:
            return None
        try:
            index = int(identifier[:2], 16)
        except ValueError:
            return None
        return index if index < self.count else None

    def route(self, data: bytes) -> int | None:
        """The other worker that owns this raw SIP message, or None: handle it here."""
        if not self.sharded:
            return None
        end = data.find(_END_OF_HEADERS)
        head = data if end < 0 else data[:end]
        if head.startswith(b"SIP/2.0 "):
            match = _VIA_BRANCH.search(head)
        else:
            match = _TO_TAG.search(head) or _C2D.match(head)
            if match is None and head.startswith(_BY_CALL_ID):
                call_id = _CALL_ID.search(head)
                if call_id is None or not call_id.group(1):
                    return None
                index = zlib.crc32(call_id.group(1)) % self.count
                return None if index == self.index else index
        if match is None:
            return None
        index = int(match.group(1), 16)
        if index >= self.count or index == self.index:
            return None
        return index


#: one process, no workers: identifiers all random, nothing routed
SINGLE: Final = Shard()
