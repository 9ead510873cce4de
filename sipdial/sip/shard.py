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
  Refer-To put into its Request-URI; a phone that drops that parameter sends its INVITE
  from the user to the number anyway: the workers tell each other which of them waits for
  which (user, number) (:class:`Referrals`, kept by the mesh), and that worker gets it;
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

__all__ = ["SINGLE", "Referrals", "Shard"]

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
#: the user part of a sip:/sips: Request-URI (escaped, as on the wire)
_RURI_USER: Final = re.compile(rb"^(?:INVITE|CANCEL) sips?:([^@;?\s>]+)@", re.IGNORECASE)
#: §20.20: "From" / "f", the user part of its (first) sip:/sips: URI
_FROM_USER: Final = re.compile(rb"^(?:from|f)[ \t]*:[^\r\n]*?sips?:([^@;?\s>]+)@",
                               re.IGNORECASE | re.MULTILINE)


class Referrals:
    """Which worker waits for the referred INVITE of which REFER-mode call, by (user,
    number): the user part of the phone's From and of the Refer-To it was given (both
    escaped, as on the wire). Filled from the calls of this worker and, over the mesh, of
    the others; consulted for an INVITE or CANCEL without a To tag or x-c2d, before the
    Call-ID hash. An entry that outlived its call only sends an ordinary call of that user
    to that number to a worker that handles it like any other."""

    def __init__(self) -> None:
        self._owners: dict[tuple[bytes, bytes], dict[str, int]] = {}  # -> call id -> worker
        self._calls: dict[str, tuple[int, tuple[bytes, bytes]]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def add(self, worker: int, call_id: str, user: str, number: str) -> None:
        self.remove(call_id)
        key = (user.encode("utf-8", "surrogateescape"),
               number.encode("utf-8", "surrogateescape"))
        self._owners.setdefault(key, {})[call_id] = worker
        self._calls[call_id] = (worker, key)

    def remove(self, call_id: str) -> None:
        entry = self._calls.pop(call_id, None)
        if entry is None:
            return
        owners = self._owners[entry[1]]
        del owners[call_id]
        if not owners:
            del self._owners[entry[1]]

    def forget_worker(self, worker: int) -> None:
        """``worker`` restarted: its calls are gone."""
        for call_id in [c for c, (w, _) in self._calls.items() if w == worker]:
            self.remove(call_id)

    def of_worker(self, worker: int) -> list[tuple[str, str, str]]:
        """(call id, user, number) of every entry of ``worker``."""
        return [(c, key[0].decode("utf-8", "surrogateescape"),
                 key[1].decode("utf-8", "surrogateescape"))
                for c, (w, key) in self._calls.items() if w == worker]

    def owner(self, head: bytes) -> int | None:
        """The worker waiting for this INVITE/CANCEL (its header block), or None."""
        if not self._owners:
            return None
        number = _RURI_USER.match(head)
        user = _FROM_USER.search(head) if number is not None else None
        if user is None or number is None:
            return None
        owners = self._owners.get((user.group(1), number.group(1)))
        if not owners:
            return None
        return next(reversed(owners.values()))  # the latest, if several wait


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

    def route(self, data: bytes, referrals: Referrals | None = None) -> int | None:
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
                if referrals:
                    waiting = referrals.owner(head)
                    if waiting is not None:
                        return None if waiting == self.index else waiting
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
