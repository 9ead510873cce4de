"""Who is calling: a caller's number turned into a name for the CRM's popup (issue 10 §3).

Two sources, asked in this order:

* the **phonebook** sipdial loads (``[contacts] phonebook``): a CSV file with a header row
  (``name``; every column whose header says number, phone, mobile, tel or fax; ``url``) or a
  vCard file (``FN``, ``TEL``, ``URL``). Numbers are compared in E.164 (completed with
  ``[numbers]``, so ``030 123456`` in the file matches a caller ``+4930123456``). An answer
  from here is immediate.
* the CRM's **lookup URL** (``[contacts] lookup_url``, ``{e164}`` replaced by the number,
  %-encoded): ``GET`` answering JSON ``{"name": ..., "url": ...}`` (anything else, a 404,
  an error or a timeout: nobody). Answers, empty ones too, are cached for ``cache_ttl``.

The call never waits for either: :class:`sipdial.calls.IncomingCall` holds only its first
event (``call.incoming``) back, for at most ``lookup_timeout``. An answer that comes later
still fills the cache for the next call.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import quote

from twisted.internet.defer import Deferred

from sipdial.numbers import InvalidNumber, NumberPlan, complete

__all__ = ["Contact", "ContactLookup", "Contacts", "Phonebook", "PhonebookError",
           "entries_of", "number_key"]


def entries_of(text: str, name: str = "import") -> list[tuple[Contact, list[str]]]:
    """The contacts of a CSV (header row) or vCard text (``PhonebookError`` if neither)."""
    if text.lstrip().upper().startswith("BEGIN:VCARD"):
        return _vcards(text)
    return _csv_rows(text, name)

log = logging.getLogger("sipdial.contacts")

_MAX_NAME: Final = 200
_MAX_URL: Final = 2048
_MAX_ANSWER: Final = 64 * 1024  #: bytes of a lookup answer read at most
_NUMBER_HEADER: Final = re.compile(r"number|phone|mobile|tel|fax|nummer|telefon|handy",
                                   re.IGNORECASE)
_SEPARATORS: Final = re.compile(r"[\s\-./()]")


@dataclass(frozen=True, slots=True)
class Contact:
    """Who a number belongs to."""

    name: str
    url: str | None = None

    def to_json(self) -> dict[str, str]:
        return {"name": self.name} if self.url is None else {"name": self.name, "url": self.url}


class ContactLookup(Protocol):
    """What an incoming call asks: ``done(contact or None)`` now or later (once); ``user``:
    the called user (their own phonebook counts)."""

    def lookup(self, number: str, done: Callable[[Contact | None], None],
               user: str | None = None) -> None: ...


class BookLookup(Protocol):
    """The users' phonebooks (:class:`sipdial.store.ContactBook`)."""

    def find_number(self, user: str, key: str) -> Deferred[Any]: ...


class PhonebookError(ValueError):
    """The phonebook file cannot be read (the message names the file and line)."""


def number_key(number: str, plan: NumberPlan) -> str | None:
    """How phonebooks and callers are compared: E.164 where it completes (None: no
    number)."""
    return _key(number, plan)


def _key(number: str, plan: NumberPlan) -> str | None:
    """A number as the phonebook and the callers are compared: E.164 where it completes."""
    text = _SEPARATORS.sub("", number.strip())
    if text.lower().startswith("tel:"):
        text = text[4:]
    if text.startswith("+"):
        text = "+" + text[1:].replace("(0)", "")
    if not re.fullmatch(r"\+?[0-9]{2,32}", text):
        return None
    try:
        return complete(text, plan, lambda _user: False)
    except InvalidNumber:
        return text


def _clean(text: str, limit: int) -> str | None:
    text = " ".join(text.split())
    if not text or len(text) > limit or any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in text):
        return None
    return text


def _clean_url(text: str | None) -> str | None:
    if text is None:
        return None
    url = text.strip()
    if len(url) > _MAX_URL or not re.fullmatch(r"https?://\S+", url):
        return None
    return url


class Phonebook:
    """Numbers -> contacts, loaded from a file (``from_file``) or given entries."""

    def __init__(self, entries: Iterable[tuple[Contact, Iterable[str]]],
                 plan: NumberPlan) -> None:
        self.plan = plan
        self._by_number: dict[str, Contact] = {}
        for contact, numbers in entries:
            for number in numbers:
                key = _key(number, plan)
                if key is not None:
                    self._by_number.setdefault(key, contact)  # the first entry wins

    def __len__(self) -> int:
        return len(self._by_number)

    def find(self, number: str) -> Contact | None:
        key = _key(number, self.plan)
        return None if key is None else self._by_number.get(key)

    @classmethod
    def from_file(cls, path: str, plan: NumberPlan) -> Phonebook:
        try:
            with open(path, "rb") as fh:
                data = fh.read(16 * 1024 * 1024 + 1)
        except OSError as exc:
            raise PhonebookError(f"{path}: {exc.strerror or exc}") from None
        if len(data) > 16 * 1024 * 1024:
            raise PhonebookError(f"{path}: larger than 16 MiB")
        text = data.decode("utf-8-sig", "replace")
        if text.lstrip().upper().startswith("BEGIN:VCARD"):
            return cls(_vcards(text), plan)
        return cls(_csv_rows(text, path), plan)


def _csv_rows(text: str, path: str) -> list[tuple[Contact, list[str]]]:
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel()  # type: ignore[assignment]
    rows = list(csv.reader(io.StringIO(text), dialect))
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0]]
    names = [i for i, h in enumerate(header) if h in ("name", "fn", "full name", "display name")]
    numbers = [i for i, h in enumerate(header) if _NUMBER_HEADER.search(h)]
    urls = [i for i, h in enumerate(header) if h in ("url", "link", "web")]
    if not names or not numbers:
        raise PhonebookError(f"{path}: line 1 must be a header naming a 'name' column and at "
                             "least one number column (number, phone, mobile, ...)")
    out: list[tuple[Contact, list[str]]] = []
    for row in rows[1:]:
        name = _clean(row[names[0]], _MAX_NAME) if names[0] < len(row) else None
        if name is None:
            continue
        url = _clean_url(row[urls[0]]) if urls and urls[0] < len(row) else None
        out.append((Contact(name, url), [row[i] for i in numbers if i < len(row)]))
    return out


def _vcards(text: str) -> list[tuple[Contact, list[str]]]:
    unfolded = re.sub(r"\r?\n[ \t]", "", text)  # RFC 6350 §3.2 line folding
    out: list[tuple[Contact, list[str]]] = []
    name: str | None = None
    url: str | None = None
    numbers: list[str] = []
    for line in unfolded.splitlines():
        field, _, value = line.partition(":")
        prop = field.split(";", 1)[0].strip().upper().rsplit(".", 1)[-1]
        if prop == "BEGIN":
            name, url, numbers = None, None, []
        elif prop == "FN":
            name = _clean(value.replace("\\,", ",").replace("\\;", ";"), _MAX_NAME)
        elif prop == "TEL":
            numbers.append(value)
        elif prop == "URL":
            url = _clean_url(value)
        elif prop == "END" and name is not None:
            out.append((Contact(name, url), numbers))
    return out


def contact_from_answer(body: bytes) -> Contact | None:
    """A lookup URL's JSON answer -> the contact (anything malformed: None)."""
    try:
        value = json.loads(body[:_MAX_ANSWER].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if isinstance(value, list) and value:
        value = value[0]
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    name = _clean(value["name"], _MAX_NAME)
    url = value.get("url")
    return None if name is None else Contact(name, _clean_url(url) if isinstance(url, str)
                                             else None)


#: GET a URL; fires with the body of a 2xx, or None (any other status)
Fetch = Callable[[str], "Deferred[bytes | None]"]


class Contacts:
    """:class:`ContactLookup`: the user's phonebook, the file, then the lookup URL (cached)."""

    def __init__(self, phonebook: Phonebook | None, *, lookup_url: str | None = None,
                 fetch: Fetch | None = None, cache_ttl: float = 600.0,
                 clock: Callable[[], float], max_cached: int = 10_000,
                 max_asking: int = 50, book: BookLookup | None = None) -> None:
        self.phonebook = phonebook
        self.book = book  #: the users' own phonebooks (the web page's), before the file
        self._url = lookup_url
        self._fetch = fetch
        self._ttl = cache_ttl
        self._clock = clock
        self._max = max_cached
        self._max_asking = max_asking  #: lookups under way at most
        self._cache: dict[str, tuple[float, Contact | None]] = {}
        #: lookups under way, by number: who else waits for each (one GET per number)
        self._asking: dict[str, list[Callable[[Contact | None], None]]] = {}

    def lookup(self, number: str, done: Callable[[Contact | None], None],
               user: str | None = None) -> None:
        """The called user's own phonebook (and everyone's, kept on the page) first — who
        they saved is who they expect to see — then the file, then the lookup URL."""
        if self.book is not None and user is not None and number.startswith("+"):
            def in_book(entry: Any) -> None:
                if entry is not None:
                    done(Contact(entry.name, entry.url))
                else:
                    self._in_file(number, done)

            def book_failed(failure: object) -> None:
                log.warning("phonebook lookup for %s failed: %s", number,
                            getattr(failure, "getErrorMessage", lambda: failure)())
                self._in_file(number, done)

            self.book.find_number(user, number).addCallbacks(in_book, book_failed)
            return
        self._in_file(number, done)

    def _in_file(self, number: str, done: Callable[[Contact | None], None]) -> None:
        if self.phonebook is not None:
            found = self.phonebook.find(number)
            if found is not None:
                done(found)
                return
        self._ask_url(number, done)

    def _ask_url(self, number: str, done: Callable[[Contact | None], None]) -> None:
        if self._url is None or self._fetch is None or not number.startswith("+"):
            done(None)
            return
        now = self._clock()
        cached = self._cache.get(number)
        if cached is not None and cached[0] > now:
            done(cached[1])
            return
        waiting = self._asking.get(number)
        if waiting is not None:
            waiting.append(done)
            return
        if len(self._asking) >= self._max_asking:
            done(None)  # a flood of distinct callers: no GET for each
            return
        self._asking[number] = [done]
        url = self._url.replace("{e164}", quote(number, safe=""))

        def tell(contact: Contact | None) -> None:
            for each in self._asking.pop(number, []):
                each(contact)

        def answered(body: bytes | None) -> None:
            # an answer (404: nobody) is cached; an error is not
            contact = None if body is None else contact_from_answer(body)
            if len(self._cache) >= self._max:
                self._cache.clear()
            self._cache[number] = (self._clock() + self._ttl, contact)
            tell(contact)

        def failed(failure: object) -> None:
            log.info("contact lookup for %s failed: %s", number,
                     getattr(failure, "getErrorMessage", lambda: failure)())
            tell(None)

        self._fetch(url).addCallbacks(answered, failed)
