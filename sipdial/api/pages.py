"""The few HTML pages the API serves to people rather than programs: what a call link does
(with the button that places the call) and what became of a link or a ``/dial`` request.

Plain HTML with inline CSS, no script, nothing fetched from elsewhere; every value from a
link or a request is escaped. Sent with a Content-Security-Policy that allows nothing but
that CSS and a form posting to the page itself, and refuses framing (a framed page could
be clicked through: clickjacking places a call).
"""

from __future__ import annotations

import html
from typing import Final

__all__ = ["PAGE_HEADERS", "error_page", "link_page", "placed_page"]

PAGE_HEADERS: Final = (
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; "
                                "form-action 'self'; frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),  # the token is in the URL
    ("X-Content-Type-Options", "nosniff"),
)

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


def placed_page(user: str, to: str) -> bytes:
    return _page(f"Calling {to}", (
        f'<h1>Calling <span class="n">{html.escape(to)}</span></h1>'
        f"<p>The phone of user {html.escape(user)} rings now.</p>"))


def error_page(message: str) -> bytes:
    return _page("Not possible", f"<h1>Not possible</h1><p>{html.escape(message)}</p>")
