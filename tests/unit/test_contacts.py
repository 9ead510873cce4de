"""Who is calling (sipdial.contacts): phonebook files as CRMs export them, and the CRM's
lookup URL with its cache. No sockets: the lookup's fetch is a function here."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed

from sipdial.contacts import Contact, Contacts, Phonebook, PhonebookError, contact_from_answer
from sipdial.numbers import NumberPlan

PLAN = NumberPlan(country="49", area="30")


def test_a_csv_phonebook_with_several_number_columns(tmp_path: Path) -> None:
    path = tmp_path / "book.csv"
    path.write_text("Name;Telefon;Mobile;URL\n"
                    "Erika Mustermann;030 123456;+49 171 2345678;https://crm/c/1\n"
                    "Max;(030) 999-00;;not a url\n"
                    ";0301111;;\n", encoding="utf-8")
    book = Phonebook.from_file(str(path), PLAN)
    assert book.find("+4930123456") == Contact("Erika Mustermann", "https://crm/c/1")
    assert book.find("+491712345678") == Contact("Erika Mustermann", "https://crm/c/1")
    assert book.find("030/99900") == Contact("Max", None)  # bad URL dropped, number kept
    assert book.find("+4930111") is None  # no name: no entry
    assert len(book) == 3


def test_a_vcard_phonebook(tmp_path: Path) -> None:
    path = tmp_path / "book.vcf"
    path.write_text("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Erika\r\n  Mustermann\r\n"
                    "TEL;TYPE=WORK:+49 30 123456\r\nitem1.URL:https://crm/c/1\r\nEND:VCARD\r\n"
                    "BEGIN:VCARD\r\nFN:Max\\, Jr.\r\nTEL:0301111\r\nEND:VCARD\r\n")
    book = Phonebook.from_file(str(path), PLAN)
    assert book.find("030123456") == Contact("Erika Mustermann", "https://crm/c/1")
    assert book.find("+49301111") == Contact("Max, Jr.", None)


@pytest.mark.parametrize("text", ["", "just,some,columns\n1,2,3\n"])
def test_a_csv_without_name_and_number_columns_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "book.csv"
    path.write_text(text)
    if not text:
        assert len(Phonebook.from_file(str(path), PLAN)) == 0
        return
    with pytest.raises(PhonebookError, match="header"):
        Phonebook.from_file(str(path), PLAN)


@pytest.mark.parametrize(("body", "expected"), [
    (b'{"name": "Erika", "url": "https://crm/c/1"}', Contact("Erika", "https://crm/c/1")),
    (b'[{"name": "Erika"}]', Contact("Erika")),
    (b'{"name": "Erika", "url": "javascript:alert(1)"}', Contact("Erika")),
    (b'{"name": ""}', None), (b"{}", None), (b"[]", None), (b"not json", None),
    (b'{"name": "\\u0000x"}', None), (b"\xff\xfe", None), (b'{"name": 5}', None),
])
def test_lookup_answers_are_read_carefully(body: bytes, expected: Contact | None) -> None:
    assert contact_from_answer(body) == expected


def test_the_lookup_url_is_asked_once_per_number_and_cached() -> None:
    asked: list[str] = []
    now = [0.0]

    def fetch(url: str) -> Deferred[bytes | None]:
        asked.append(url)
        return succeed(b'{"name": "Erika"}' if "%2B4930" in url else None)

    contacts = Contacts(None, lookup_url="https://crm/lookup?n={e164}", fetch=fetch,
                        cache_ttl=60, clock=lambda: now[0])
    got: list[Contact | None] = []
    contacts.lookup("+4930123456", got.append)
    contacts.lookup("+4930123456", got.append)
    contacts.lookup("+4940123456", got.append)
    assert got == [Contact("Erika"), Contact("Erika"), None]
    assert asked == ["https://crm/lookup?n=%2B4930123456", "https://crm/lookup?n=%2B4940123456"]
    now[0] = 61.0
    contacts.lookup("+4930123456", got.append)
    assert len(asked) == 3  # expired: asked again


def test_a_failed_lookup_is_nobody_and_the_phonebook_comes_first() -> None:
    book = Phonebook([(Contact("From the book"), ["+4930123456"])], PLAN)
    contacts = Contacts(book, lookup_url="https://crm/{e164}",
                        fetch=lambda url: fail(ConnectionRefusedError()), clock=lambda: 0.0)
    got: list[Contact | None] = []
    contacts.lookup("+4930123456", got.append)
    contacts.lookup("+4940123456", got.append)
    assert got == [Contact("From the book"), None]


def test_the_users_own_phonebook_comes_before_the_file() -> None:
    class Book:
        def find_number(self, user: str, key: str) -> Deferred[Any]:
            entry = SimpleNamespace(name=f"{user}'s Erika", url=None)
            return succeed(entry if key == "+4930123456" else None)

    contacts = Contacts(Phonebook([(Contact("From the file"), ["+4930123456", "+4930999"])],
                                  PLAN), clock=lambda: 0.0, book=Book())
    got: list[Contact | None] = []
    contacts.lookup("+4930123456", got.append, user="201")
    contacts.lookup("+4930999", got.append, user="201")
    contacts.lookup("+4930123456", got.append)  # no user: the file only
    assert got == [Contact("201's Erika"), Contact("From the file"), Contact("From the file")]


def test_one_lookup_per_number_at_a_time_and_errors_are_not_cached() -> None:
    pending: list[Deferred[bytes | None]] = []

    def fetch(url: str) -> Deferred[bytes | None]:
        pending.append(Deferred())
        return pending[-1]

    contacts = Contacts(None, lookup_url="https://crm/{e164}", fetch=fetch, clock=lambda: 0.0,
                        max_asking=2)
    got: list[Contact | None] = []
    contacts.lookup("+4930123456", got.append)
    contacts.lookup("+4930123456", got.append)  # the same number: waits for the same GET
    assert len(pending) == 1
    pending[0].errback(ConnectionRefusedError())
    assert got == [None, None]
    contacts.lookup("+4930123456", got.append)  # the error was not cached: asked again
    assert len(pending) == 2
    contacts.lookup("+4940000001", got.append)
    contacts.lookup("+4940000002", got.append)  # a third number at once: over max_asking
    assert len(pending) == 3 and got[-1] is None
    pending[1].callback(None)  # 404: nobody, cached
    contacts.lookup("+4930123456", got.append)
    assert len(pending) == 3
