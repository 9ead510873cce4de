"""The few HTML pages the API serves to people rather than programs: what a call link does
(with the button that places the call) and what became of a link or a ``/dial`` request.

Plain HTML with inline CSS, no script, nothing fetched from elsewhere; every value from a
link or a request is escaped. Sent with a Content-Security-Policy that allows nothing but
that CSS and a form posting to the page itself, and refuses framing (a framed page could
be clicked through: clickjacking places a call).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Final
from urllib.parse import quote

__all__ = ["PAGE_HEADERS", "PAGE_HEADERS_APP", "dial_confirm_page", "error_page", "link_page",
           "placed_page", "sign_in_page", "static_file"]

PAGE_HEADERS: Final = (
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; "
                                "form-action 'self'; frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),  # the token is in the URL
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


def _page(title: str, body: str) -> bytes:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body>{body}</body></html>").encode()


def link_page(user: str, to: str, expires: str) -> bytes:
    """What the link does, and the button (a POST to the same URL) that does it."""
    return _page(f"Call {to}", (
        f'<h1>Call <span class="n">{html.escape(to)}</span></h1>'
        f"<p>Your phone (user {html.escape(user)}) rings first; pick it up and you are "
        f"connected.</p>"
        f'<form method="post"><button type="submit" autofocus>Call now</button></form>'
        f"<p><small>This link works once, until {html.escape(expires)}.</small></p>"))


def dial_confirm_page(to: str, csrf: str) -> bytes:
    """``/dial?to=`` in the browser (its tel: handler): asked before anything is dialled."""
    return _page(f"Call {to}", (
        f'<h1>Call <span class="n">{html.escape(to)}</span>?</h1>'
        f'<form method="post"><input type="hidden" name="to" value="{html.escape(to)}">'
        f'<input type="hidden" name="csrf" value="{html.escape(csrf)}">'
        f'<button type="submit" autofocus>Call now</button></form>'
        f'<p><a href="/">sipdial</a></p>'))


def sign_in_page(to: str) -> bytes:
    target = "/#dial=" + html.escape(quote(to, safe=""))
    return _page("Sign in", (
        f"<h1>Sign in first</h1><p>To call <span class=\"n\">{html.escape(to)}</span>, "
        f'<a href="{target}">sign in to sipdial</a>.</p>'))


def placed_page(user: str, to: str) -> bytes:
    return _page(f"Calling {to}", (
        f'<h1>Calling <span class="n">{html.escape(to)}</span></h1>'
        f"<p>The phone of user {html.escape(user)} rings now.</p>"))


def error_page(message: str) -> bytes:
    return _page("Not possible", f"<h1>Not possible</h1><p>{html.escape(message)}</p>")
