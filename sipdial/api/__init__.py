"""HTTP API: the routes (:func:`build_site`) and the engine contract (:class:`CallApi`)."""

from sipdial.api.http import build_site
from sipdial.api.service import ApiError, CallApi

__all__ = ["ApiError", "CallApi", "build_site"]
