"""The few HTML pages the API serves to people rather than programs: what a call link does
(with the button that places the call) and what became of a link or a ``/dial`` request.

Plain HTML with inline CSS, no script, nothing fetched from elsewhere; every value from a
link or a request is escaped. Sent with a Content-Security-Policy that allows nothing but
that CSS and a form posting to the page itself, and refuses framing (a framed page could
be clicked through: clickjacking places a call).
"""

from __future__ import annotations

import enum
import html
from pathlib import Path
from typing import Final
from urllib.parse import quote

__all__ = ["PAGE_HEADERS", "PAGE_HEADERS_APP", "Lang", "dial_confirm_page", "error_page",
           "language", "link_page", "placed_page", "sign_in_page", "static_file"]

PAGE_HEADERS: Final = (
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; "
                                "form-action 'self'; frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
    # the token is in a link's URL: never to another site. Not "no-referrer": with it a
    # browser sends "Origin: null" with the page's own form, which sipdial refuses (CSRF)
    ("Referrer-Policy", "same-origin"),
    ("X-Content-Type-Options", "nosniff"),
)

#: the web page (issue 11): its own scripts, styles and API only, no framing
PAGE_HEADERS_APP: Final = (
    ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
)

_STATIC: Final = Path(__file__).resolve().parent / "static"
_TYPES: Final = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".json": "application/json; charset=utf-8",
                 ".svg": "image/svg+xml"}


def _load_static() -> dict[str, tuple[str, bytes]]:
    files = {}
    for path in _STATIC.iterdir() if _STATIC.is_dir() else ():
        content_type = _TYPES.get(path.suffix)
        if content_type is not None and path.is_file() and not path.name.startswith("."):
            files[path.name] = (content_type, path.read_bytes())
    return files


_FILES: Final = _load_static()  #: read once: a name nobody has costs nothing to ask for


def static_file(name: str) -> tuple[str, bytes] | None:
    """(content type, bytes) of a file of the web page, by its plain name (no paths)."""
    return _FILES.get(name)


_STYLE: Final = ("body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;"
                 "padding:0 1rem;line-height:1.5}button{font-size:1.2rem;padding:.6rem 1.4rem}"
                 ".n{font-size:1.6rem;font-weight:600}")


class Lang(enum.Enum):
    """The pages' languages (the web page's too): the seeds' users speak German."""

    EN = "en"
    DE = "de"


def language(accept_language: str) -> Lang:
    """The browser's first language sipdial speaks (``Accept-Language``, by q), else EN."""
    best: tuple[float, int, Lang] | None = None
    for position, item in enumerate(accept_language.split(",")[:20]):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        primary = tag.strip().lower().partition("-")[0]
        found = next((lang for lang in Lang if lang.value == primary), None)
        if found is not None and quality > 0 and (
                best is None or (-quality, position) < (-best[0], best[1])):
            best = (quality, position, found)
    return best[2] if best is not None else Lang.EN


_WORDS: Final = {
    Lang.EN: {
        "call": "Call", "call_now": "Call now", "question": "?",
        "rings_first": "Your phone (user {user}) rings first; pick it up and you are "
                       "connected.",
        "once": "This link works once, until {expires}.",
        "sign_in_first": "Sign in first", "sign_in_to": "To call {to}, ",
        "sign_in_link": "sign in to sipdial", "calling": "Calling",
        "rings_now": "The phone of user {user} rings now.", "not_possible": "Not possible",
    },
    Lang.DE: {
        "call": "Anrufen:", "call_now": "Jetzt anrufen", "question": "",
        "rings_first": "Zuerst klingelt Ihr Telefon (Benutzer {user}); heben Sie ab, und "
                       "Sie werden verbunden.",
        "once": "Dieser Link gilt einmal, bis {expires}.",
        "sign_in_first": "Zuerst anmelden", "sign_in_to": "Um {to} anzurufen, ",
        "sign_in_link": "bei sipdial anmelden", "calling": "Wählt",
        "rings_now": "Das Telefon von Benutzer {user} klingelt jetzt.",
        "not_possible": "Nicht möglich",
    },
}


def _page(title: str, body: str, lang: Lang) -> bytes:
    return (f'<!DOCTYPE html><html lang="{lang.value}"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body>{body}</body></html>").encode()


def link_page(user: str, to: str, expires: str, lang: Lang = Lang.EN) -> bytes:
    """What the link does, and the button (a POST to the same URL) that does it."""
    w = _WORDS[lang]
    return _page(f"{w['call']} {to}", (
        f'<h1>{w["call"]} <span class="n">{html.escape(to)}</span></h1>'
        f"<p>{w['rings_first'].format(user=html.escape(user))}</p>"
        f'<form method="post"><button type="submit" autofocus>{w["call_now"]}</button></form>'
        f"<p><small>{w['once'].format(expires=html.escape(expires))}</small></p>"), lang)


def dial_confirm_page(to: str, csrf: str, lang: Lang = Lang.EN) -> bytes:
    """``/dial?to=`` in the browser (its tel: handler): asked before anything is dialled."""
    w = _WORDS[lang]
    return _page(f"{w['call']} {to}", (
        f'<h1>{w["call"]} <span class="n">{html.escape(to)}</span>{w["question"]}</h1>'
        f'<form method="post"><input type="hidden" name="to" value="{html.escape(to)}">'
        f'<input type="hidden" name="csrf" value="{html.escape(csrf)}">'
        f'<button type="submit" autofocus>{w["call_now"]}</button></form>'
        f'<p><a href="/">sipdial</a></p>'), lang)


def sign_in_page(to: str, lang: Lang = Lang.EN) -> bytes:
    w = _WORDS[lang]
    target = "/#dial=" + html.escape(quote(to, safe=""))
    shown = f'<span class="n">{html.escape(to)}</span>'
    return _page(w["sign_in_first"], (
        f"<h1>{w['sign_in_first']}</h1><p>{w['sign_in_to'].format(to=shown)}"
        f'<a href="{target}">{w["sign_in_link"]}</a>.</p>'), lang)


def placed_page(user: str, to: str, lang: Lang = Lang.EN) -> bytes:
    w = _WORDS[lang]
    return _page(f"{w['calling']} {to}", (
        f'<h1>{w["calling"]} <span class="n">{html.escape(to)}</span></h1>'
        f"<p>{w['rings_now'].format(user=html.escape(user))}</p>"), lang)


def error_page(message: str, lang: Lang = Lang.EN) -> bytes:
    """(the message is the API's, in English)"""
    w = _WORDS[lang]
    return _page(w["not_possible"],
                 f"<h1>{w['not_possible']}</h1><p>{html.escape(message)}</p>", lang)
