"""The web page in a real browser (issue 11): headless Chromium (Debian's chromium and
chromedriver) driven by Selenium against a running sipdial, two baresip phones of user 201
(one answers by itself, one never does) and a SIPp destination.

Sign in, type a number: the phone rings, the page shows the states live up to connected,
hang up from the page, the call is in the list; a call to the phone that does not answer
is missed and marked, and its call-back button places the call again. Screenshots of each
step go to ``$SIPDIAL_SCREENSHOTS`` (default: the test's tmp dir, ``screenshots/``)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.integration.c2d_helpers import ROUTE_MATCH, user
from tests.peers.baresip import Baresip
from tests.peers.sipp import LOOPBACK, Sipp
from tests.sipdial_proc import Sipdial

pytestmark = pytest.mark.integration

NUMBER = "+4930123456"


def _chrome(profile: Path, lang: str = "en-US") -> Any:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, "CI installs chromium and chromium-driver (.ci/run)"
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,900",
                f"--lang={lang}", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"intl.accept_languages": lang})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    driver = _chrome(tmp_path / "chromium")
    try:
        yield driver
    finally:
        driver.quit()


def _shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SIPDIAL_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _text_is(driver: Any, element_id: str, *wanted: str, timeout: float = 20) -> str:
    def check(d: Any) -> str | bool:
        text = d.find_element(By.ID, element_id).text
        return text if any(w in text for w in wanted) else False
    result: str = WebDriverWait(driver, timeout).until(check)
    return result


def _sign_in(driver: Any, user_id: str, *, shot: Path | None = None) -> None:
    """Fill in the sign-in form shown now (the test's users' passwords are secret<id>)."""
    WebDriverWait(driver, 20).until(ec.visibility_of_element_located((By.ID, "sign-in")))
    if shot is not None:
        driver.save_screenshot(str(shot))
    driver.find_element(By.ID, "user").send_keys(user_id)
    driver.find_element(By.ID, "password").send_keys(f"secret{user_id}", Keys.ENTER)


def _rows(driver: Any, css: str = "#calls tbody tr") -> list[tuple[str, str]]:
    """(class, text) of each row as the page shows them now (it re-renders a list on
    every event: a row found a moment ago may be gone, so they are read in one go)."""
    def read(d: Any) -> list[tuple[str, str]]:
        return [(r.get_attribute("class") or "", r.text)
                for r in d.find_elements(By.CSS_SELECTOR, css)]
    rows: list[tuple[str, str]] = WebDriverWait(
        driver, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: (read(d),))[0]
    return rows


def _click(driver: Any, css: str, timeout: float = 20) -> None:
    """Click the element ``css`` once it is there, finding it again if the page replaced
    it in between."""
    def click(d: Any) -> bool:
        d.find_element(By.CSS_SELECTOR, css).click()
        return True
    WebDriverWait(driver, timeout, ignored_exceptions=(
        StaleElementReferenceException, NoSuchElementException)).until(click)


@contextmanager
def _office(tmp_path: Path, *, calls: int = 1, users: list[dict[str, Any]] | None = None,
            extra: str = "") -> Iterator[tuple[Sipdial, Baresip]]:
    """sipdial with user 201's registered baresip phone (it answers by itself) and a SIPp
    destination that answers ``calls`` calls, every number routed to it."""
    with Sipp.uas(tmp_path, "uas_answer.xml", timeout=120, calls=calls) as dest:
        sd = Sipdial(tmp_path, users=users or [user("201", auto_answer=True)],
                     routes=[{"match": ROUTE_MATCH,
                              "uri": f"sip:{{number}}@{LOOPBACK}:{dest.port}"}],
                     extra=extra)
        with sd.start():
            dest.start()
            with Baresip(tmp_path, user="201", password="secret201",
                         registrar=f"127.0.0.1:{sd.sip_port('udp')}", outbound=False) as phone:
                sd.wait_registered("201")
                yield sd, phone


def test_sign_in_call_watch_it_live_hang_up_and_call_back_a_missed_call(
        tmp_path: Path, browser: Any) -> None:
    shots = _shots(tmp_path)
    with Sipp.uas(tmp_path, "uas_answer.xml", timeout=120, calls=3) as dest:
        sd = Sipdial(tmp_path, users=[user("201", auto_answer=True)],
                     routes=[{"match": ROUTE_MATCH,
                              "uri": f"sip:{{number}}@{LOOPBACK}:{dest.port}"}],
                     calls={"user_answer_timeout": 3})
        with sd.start():
            dest.start()
            registrar = f"127.0.0.1:{sd.sip_port('udp')}"
            with Baresip(tmp_path, user="201", password="secret201", registrar=registrar,
                         outbound=False, name="desk") as desk, \
                    Baresip(tmp_path, user="201", password="secret201", registrar=registrar,
                            outbound=False, auto_answer=False, name="silent") as silent:
                sd.wait_registered("201", count=2)
                wait = WebDriverWait(browser, 20)
                browser.get(sd.http_url + "/")
                _sign_in(browser, "201", shot=shots / "1-sign-in.png")
                wait.until(ec.visibility_of_element_located((By.ID, "call-box")))
                assert "201" in browser.find_element(By.ID, "who").text
                browser.save_screenshot(str(shots / "2-dashboard.png"))

                # 1. a call from the call box, to the phone that answers by itself
                devices = Select(browser.find_element(By.ID, "device"))
                desk_contact = next(o.get_attribute("value") for o in devices.options
                                    if f":{desk.sip_port}" in (o.get_attribute("value") or ""))
                devices.select_by_value(desk_contact)
                browser.find_element(By.ID, "to").send_keys(NUMBER)
                browser.find_element(By.ID, "dial").click()
                _text_is(browser, "current-state", "connected")
                incoming = desk.wait_event("CALL_ESTABLISHED", timeout=10)
                assert "4930123456" in str(incoming)  # the number as caller ID
                browser.save_screenshot(str(shots / "3-connected.png"))
                browser.find_element(By.ID, "hang-up").click()
                _text_is(browser, "current-state", "cancelled", "hung up")
                wait.until(lambda d: any(NUMBER in text for _, text in _rows(d)))
                browser.save_screenshot(str(shots / "4-hung-up.png"))

                # 2. a call to the phone that never answers: missed, marked, called back
                silent_contact = next(o.get_attribute("value") for o in devices.options
                                      if f":{silent.sip_port}" in
                                      (o.get_attribute("value") or ""))
                devices.select_by_value(silent_contact)
                browser.find_element(By.ID, "dial").click()
                _text_is(browser, "current-state", "missed", timeout=20)
                wait.until(lambda d: any("missed" in cls for cls, _ in _rows(d)))
                browser.save_screenshot(str(shots / "5-missed.png"))
                assert len(_rows(browser)) == 2
                browser.find_element(By.ID, "only-missed").click()  # filtered by the server
                wait.until(lambda d: len(_rows(d)) == 1)
                assert "missed" in _rows(browser)[0][0]
                devices.select_by_value(desk_contact)
                _click(browser, "#calls tbody tr.missed button.call-back")
                _text_is(browser, "current-state", "connected")
                browser.save_screenshot(str(shots / "6-called-back.png"))
                browser.find_element(By.ID, "hang-up").click()
                _text_is(browser, "current-state", "cancelled", "hung up")
                status, calls = sd.api("GET", "/v1/calls?user=201")
                assert status == 200, calls
                causes = [c["cause"] for c in calls["calls"]]
                assert causes.count("user_no_answer") == 1 and len(causes) == 3, causes
    assert {"1-sign-in.png", "2-dashboard.png", "3-connected.png", "4-hung-up.png",
            "5-missed.png", "6-called-back.png"} <= {p.name for p in shots.iterdir()}


def test_import_a_phonebook_dial_from_it_and_see_who_calls(tmp_path: Path,
                                                           browser: Any) -> None:
    """CSV import on the page (a file bigger than one request may be: sent in parts),
    search, change a contact, click-to-dial from the phonebook, and an incoming call from
    a trunk (SIPp at 127.0.0.2) shows the caller's name from that phonebook."""
    from tests.integration.test_inbound_e2e import CARRIER, DID, _carrier

    shots = _shots(tmp_path)
    book = tmp_path / "contacts.csv"
    others = "".join(f'"Kunde {i:04}, Abteilung\nEinkauf",0211 {500000 + i}\n'
                     for i in range(3000))
    book.write_text("Name,Phone\n" + others + "Erika Mustermann,030 123456\n")
    assert book.stat().st_size > 2 * 64 * 1024  # three requests at least
    with _office(tmp_path, extra=(f'[numbers]\ncountry = "49"\narea = "211"\n'
                                  f'[[trunks]]\nname = "carrier"\nallow_from = ["{CARRIER}/32"]\n'
                                  f'dids = {{ "{DID}" = "201" }}\n')) as (sd, phone):
        wait = WebDriverWait(browser, 20)
        browser.get(sd.http_url + "/")
        _sign_in(browser, "201")
        wait.until(ec.visibility_of_element_located((By.ID, "book-import")))
        browser.find_element(By.ID, "book-file").send_keys(str(book))
        browser.find_element(By.CSS_SELECTOR, "#book-import button").click()
        _text_is(browser, "book-status", "3001 imported", timeout=60)
        status, found = sd.api("GET", "/v1/contacts?q=Kunde%202999&owner=201")
        assert status == 200
        assert found["contacts"][0]["name"] == "Kunde 2999, Abteilung Einkauf", found
        browser.find_element(By.ID, "book-search").send_keys("Mustermann")
        wait.until(lambda d: [t for _, t in _rows(d, "#book tbody tr")] and all(
            "Mustermann" in t for _, t in _rows(d, "#book tbody tr")))
        # change her: a second number
        _click(browser, "#book tbody tr button.book-edit")
        numbers = browser.find_element(By.ID, "book-numbers")
        assert numbers.get_attribute("value") == "030 123456"
        numbers.send_keys(", 0171 2345678")
        assert browser.find_element(By.ID, "book-save").text == "Save"
        browser.find_element(By.ID, "book-save").click()
        wait.until(lambda d: any("0171 2345678" in t
                                 for _, t in _rows(d, "#book tbody tr")))
        assert browser.find_element(By.ID, "book-save").text == "Add"
        button = wait.until(ec.element_to_be_clickable(
            (By.CSS_SELECTOR, "#book button.book-dial")))
        assert "030 123456" in button.text
        browser.save_screenshot(str(shots / "7-phonebook.png"))
        button.click()
        _text_is(browser, "current-state", "connected")
        assert "+4930123456" in browser.find_element(By.ID, "current-to").text
        browser.find_element(By.ID, "hang-up").click()
        _text_is(browser, "current-state", "cancelled", "hung up")

        # someone calls from that number: the list names them
        with _carrier(tmp_path, sd, "030123456", name="erika") as carrier:
            carrier.start()
            # the current-call box shows who calls, from the phonebook
            _text_is(browser, "current-to", "Erika Mustermann")
            phone.wait_event("CALL_ESTABLISHED", timeout=15)  # auto-answered
            row = WebDriverWait(browser, 20).until(lambda d: next(
                (r for r in d.find_elements(By.CSS_SELECTOR, "#calls tbody tr")
                 if "Erika Mustermann" in r.text), False))
            assert "←" in row.text  # inbound, named from the phonebook
            browser.save_screenshot(str(shots / "8-incoming-named.png"))
            carrier.wait(20)


def test_a_tel_link_asks_then_dials(tmp_path: Path, browser: Any) -> None:
    """The browser's tel: handler opens /dial?to=tel:+49...: signed in, sipdial's page asks
    and its button dials; not signed in (a link from another site brings no cookie), the
    page signs in first, then asks in its own dialog."""
    shots = _shots(tmp_path)
    with _office(tmp_path, calls=2, users=[user("201", auto_answer=True),
                 {**user("202", name="Office"), "admin": True}]) as (sd, phone):
        wait = WebDriverWait(browser, 20)
        # not signed in: the link leads to the page, which signs in, then asks
        browser.get(sd.http_url + "/dial?to=tel:+49-30-123456")
        wait.until(ec.visibility_of_element_located((By.ID, "sign-in")))
        assert browser.current_url.endswith("/#dial=%2B4930123456")
        _sign_in(browser, "201")
        dialog = wait.until(ec.visibility_of_element_located((By.ID, "confirm-dial")))
        assert NUMBER in dialog.text
        assert sd.api("GET", "/v1/calls")[1]["calls"] == []  # asked, not dialled
        browser.save_screenshot(str(shots / "11-tel-link-asks.png"))
        dialog.find_element(By.CSS_SELECTOR, "button[value=yes]").click()
        _text_is(browser, "current-state", "connected")
        assert "4930123456" in str(phone.wait_event("CALL_ESTABLISHED", timeout=10))
        browser.find_element(By.ID, "hang-up").click()
        _text_is(browser, "current-state", "cancelled", "hung up")

        # signed in: sipdial's own confirmation page, its button dials
        browser.get(sd.http_url + "/dial?to=tel:%2B4930123456")
        button = wait.until(ec.element_to_be_clickable(
            (By.CSS_SELECTOR, "form[method=post] button")))
        assert NUMBER in browser.find_element(By.TAG_NAME, "h1").text
        assert len(sd.api("GET", "/v1/calls")[1]["calls"]) == 1
        browser.save_screenshot(str(shots / "12-tel-confirm.png"))
        button.click()
        WebDriverWait(browser, 20, ignored_exceptions=(  # the next page loads
            StaleElementReferenceException, NoSuchElementException)).until(
                lambda d: "Calling" in d.find_element(By.TAG_NAME, "h1").text)
        calls = sd.api("GET", "/v1/calls")[1]["calls"]
        assert len(calls) == 2 and calls[0]["to"] == NUMBER, calls
        sd.wait_state(calls[0]["id"], "connected")
        assert sd.api("DELETE", f"/v1/calls/{calls[0]['id']}")[0] == 200

        # user 202 is an administrator ([[users]] admin): signed in with the SIP
        # password, the page shows every user's calls
        browser.get(sd.http_url + "/")
        _click(browser, "#sign-out")
        _sign_in(browser, "202")
        _text_is(browser, "who", "202 (administrator)")
        wait.until(lambda d: len(_rows(d)) == 2 and all(
            "[201]" in text for _, text in _rows(d)))
        assert browser.find_element(By.ID, "admin-view").is_displayed()


class _Elsewhere(ThreadingHTTPServer):
    """Another site's page: a form that posts to sipdial by itself (a CSRF attempt)."""

    def __init__(self, target: str) -> None:
        super().__init__(("127.0.0.1", 0), _ElsewhereHandler)
        self.target = target


class _ElsewhereHandler(BaseHTTPRequestHandler):
    server: _Elsewhere

    def do_GET(self) -> None:
        page = (f'<form id="f" method="post" action="{self.server.target}/dial">'
                '<input name="to" value="+4930999"><input name="csrf" value="guess"></form>'
                '<script>document.getElementById("f").submit()</script>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args: object) -> None:
        pass


class _Receiver(ThreadingHTTPServer):
    """A CRM's webhook receiver: 204 on /ok, 500 on /fail."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.posts: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        path = self.path.partition("?")[0]
        self.server.posts.append(path)
        self.send_response(204 if path == "/ok" else 500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_german_admin_view_and_a_cross_site_post_is_refused(tmp_path: Path) -> None:
    """An administrator (German browser) sees every phone and how the webhooks fare (one
    CRM takes the events, one answers 500), dials for a user with one of that user's
    phones; another site's form cannot place a call with the session."""
    shots = _shots(tmp_path)
    receiver = _Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a destination that never answers
    silent.bind(("127.0.0.1", 0))
    hooks = "".join(f'[[webhooks]]\nurl = "{receiver.url}/{path}?key=secret"\n'
                    f'secret = "0123456789abcdef0123"\n' for path in ("ok", "fail"))
    sd = Sipdial(tmp_path, users=[user("201", auto_answer=True)],
                 routes=[{"match": ROUTE_MATCH,
                          "uri": f"sip:{{number}}@127.0.0.1:{silent.getsockname()[1]}"}],
                 extra=hooks)
    with sd.start(), Baresip(tmp_path, user="201", password="secret201",
                             registrar=f"127.0.0.1:{sd.sip_port('udp')}", outbound=False) as phone:
        sd.wait_registered("201")
        browser = _chrome(tmp_path / "chromium-de", "de-DE")
        elsewhere = _Elsewhere(sd.http_url)
        threading.Thread(target=elsewhere.serve_forever, daemon=True).start()
        try:
            wait = WebDriverWait(browser, 20)
            browser.get(sd.http_url + "/")
            wait.until(ec.visibility_of_element_located((By.ID, "sign-in")))
            assert browser.find_element(By.CSS_SELECTOR, "#sign-in h2, #sign-in-view h2") \
                .text == "Anmelden"
            browser.find_element(By.CSS_SELECTOR, "#sign-in details summary").click()
            browser.find_element(By.ID, "token").send_keys("admin-secret")
            browser.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()
            _text_is(browser, "who", "Administrator")
            rows = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR,
                                                        "#registrations tbody tr"))
            assert rows[0].text.startswith("201"), rows[0].text
            assert browser.find_element(By.ID, "call-box-title").text == "Anrufen"

            # a call for user 201 on the phone chosen for it: its events go to the webhooks
            browser.find_element(By.ID, "as-user").send_keys("201")
            devices = Select(browser.find_element(By.ID, "device"))
            assert devices.options[0].text == "allen Telefonen des Benutzers"
            wait.until(lambda d: len(devices.options) == 2)  # 201's one phone
            devices.select_by_index(1)
            browser.find_element(By.ID, "to").send_keys(NUMBER)
            browser.find_element(By.ID, "dial").click()
            _text_is(browser, "current-state", "Wählt", "Klingelt")
            phone.wait_event("CALL_ESTABLISHED", timeout=10)
            browser.find_element(By.ID, "hang-up").click()
            _text_is(browser, "current-state", "Abgebrochen")
            # the page reloads the table on call.ended; the deliveries may land after it
            wait.until(lambda d: "/fail" in receiver.posts and "/ok" in receiver.posts)
            browser.refresh()
            failing = wait.until(lambda d: next(
                (r for r in _rows(d, "#webhooks tbody tr")
                 if "/fail" in r[1] and "HTTP 500" in r[1]), False))
            assert "failing" in failing[0] and "key=secret" not in failing[1]
            ok = next(r for r in _rows(browser, "#webhooks tbody tr") if "/ok" in r[1])
            assert "failing" not in ok[0], ok
            assert browser.find_element(By.CSS_SELECTOR, "#webhooks th").text == "Ziel"
            browser.save_screenshot(str(shots / "9-admin-de.png"))
            browser.execute_script("document.getElementById('registrations-title')"
                                   ".scrollIntoView()")
            browser.save_screenshot(str(shots / "9b-admin-de-webhooks.png"))

            # another site's page posts to sipdial in the signed-in browser: refused
            before = len(sd.api("GET", "/v1/calls")[1]["calls"])
            browser.get(f"http://127.0.0.1:{elsewhere.server_address[1]}/")
            wait.until(lambda d: d.current_url.startswith(sd.http_url))
            assert len(sd.api("GET", "/v1/calls")[1]["calls"]) == before
            assert "Calling" not in browser.page_source
        finally:
            browser.quit()
            elsewhere.shutdown()
            receiver.shutdown()
            silent.close()


_TOO_WIDE = """
return [...document.querySelectorAll("body *")]
  .filter((el) => el.offsetParent !== null
          && el.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
  .map((el) => `${el.tagName}#${el.id}.${el.className}: ${el.getBoundingClientRect().right}`
       + ` > ${document.documentElement.clientWidth}`);
"""

_UNLABELLED = """
return [...document.querySelectorAll("input, select, button, textarea")]
  .filter((el) => el.offsetParent !== null)  // shown
  .filter((el) => el.tagName === "BUTTON"
    ? !(el.textContent.trim() || el.getAttribute("aria-label"))
    : !(el.labels && el.labels.length) && !el.getAttribute("aria-label"))
  .map((el) => el.outerHTML.slice(0, 80));
"""


def test_on_a_phone_sized_screen_by_keyboard_alone(tmp_path: Path) -> None:
    """390 x 844 CSS pixels (a phone): nothing wider than the screen; sign in, call and
    hang up with the keyboard alone; every shown control has a label or a name."""
    shots = _shots(tmp_path)
    with _office(tmp_path) as (sd, phone):
        browser = _chrome(tmp_path / "chromium-phone")
        try:
            browser.set_window_size(390, 844)
            wait = WebDriverWait(browser, 20)
            browser.get(sd.http_url + "/")
            wait.until(ec.visibility_of_element_located((By.ID, "sign-in")))
            assert browser.switch_to.active_element.get_attribute("id") == "user"
            assert browser.execute_script(_UNLABELLED) == []
            browser.switch_to.active_element.send_keys("201", Keys.TAB)
            browser.switch_to.active_element.send_keys("secret201", Keys.ENTER)
            wait.until(ec.visibility_of_element_located((By.ID, "call-box")))
            wait.until(lambda d: d.switch_to.active_element.get_attribute("id") == "to")
            browser.switch_to.active_element.send_keys(NUMBER, Keys.ENTER)
            _text_is(browser, "current-state", "connected")
            phone.wait_event("CALL_ESTABLISHED", timeout=10)
            assert browser.execute_script(_UNLABELLED) == []
            wide = browser.execute_script(_TOO_WIDE)
            assert not wide, "\n".join(wide)
            browser.save_screenshot(str(shots / "10-phone.png"))
            for _ in range(30):  # Tab to the hang-up button, Enter
                if browser.switch_to.active_element.get_attribute("id") == "hang-up":
                    break
                browser.switch_to.active_element.send_keys(Keys.TAB)
            assert browser.switch_to.active_element.get_attribute("id") == "hang-up"
            browser.switch_to.active_element.send_keys(Keys.ENTER)
            _text_is(browser, "current-state", "cancelled", "hung up")
        finally:
            browser.quit()
