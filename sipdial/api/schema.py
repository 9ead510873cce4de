"""The API's contract as data: JSON Schemas of every document and the OpenAPI 3.1 builder.

``GET /openapi.json`` is made by :func:`openapi_document` from the route table of
:mod:`sipdial.api.http`: each route's methods carry an :class:`Operation` (handler and
documentation side by side), so a route cannot exist undocumented and the document cannot
name a route that does not exist. The request body of ``POST /v1/calls`` is
:data:`CALL_REQUEST`, whose property names are also the fields the validator accepts (one
list, not two). CI runs schemathesis against a live sipdial with this document: every
response must match its schema and status list, and no input may produce a 5xx.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from sipdial.api.session import COOKIE as SESSION_COOKIE
from sipdial.store import MAX_METADATA_BYTES
from sipdial.vocabulary import INBOUND_MODE, CallState, Cause, Direction, Mode

__all__ = ["CALL_REQUEST", "COMPONENTS", "LINK_REQUEST", "Auth", "DocumentedPath", "Operation",
           "Param", "Reply", "openapi_document"]

JsonSchema = dict[str, Any]


def _ref(name: str) -> JsonSchema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: JsonSchema) -> JsonSchema:
    return {"anyOf": [schema, {"type": "null"}]}


_TIME: Final[JsonSchema] = {"type": "string", "format": "date-time",
                            "description": "ISO 8601 UTC with milliseconds"}
USER_PATTERN: Final = r"^[A-Za-z0-9._~+-]{1,64}$"
CALL_ID_PATTERN: Final = r"^[A-Za-z0-9._~-]{1,128}$"

#: ``POST /v1/calls``'s optional fields; each may also be null, meaning "not given"
_OPTIONAL_CALL_FIELDS: Final[dict[str, JsonSchema]] = {
    "device": {"type": "string", "minLength": 1, "maxLength": 256,
               "description": "ring only this registered device (Contact or User-Agent)"},
    "auto_answer": {"type": "boolean"},
    "mode": {"type": "string", "enum": [m.value for m in Mode]},
    "confirm": {"type": "boolean", "description": '"press 1" before the target is dialled'},
    "caller_id": {"type": "string", "pattern": r"^\+?[0-9]{1,20}$",
                  "description": "number shown to the target (bridge mode)"},
    "clir": {"type": "boolean", "description": "hide the caller's identity"},
    "metadata": {"type": "object",
                 "description": f"the CRM's correlation data, at most {MAX_METADATA_BYTES} "
                                "bytes as JSON; in every event"},
    "refuse_if_busy": {"type": "boolean",
                       "description": "409 user_busy while the user has a call"},
    "headers": {"type": "object", "additionalProperties": {"type": "string"},
                "description": "extra SIP headers ([calls] extra_headers only)"},
}

#: ``POST /v1/calls``: its property names are the fields the API accepts (http.py)
CALL_REQUEST: Final[JsonSchema] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["user", "to"],
    "examples": [{"user": "201", "to": "+4930123456"},
                 {"user": "201", "to": "030/123456", "mode": "bridge", "confirm": True,
                  "metadata": {"ticket": "4711"}}],
    "properties": {
        "user": {"type": "string", "pattern": USER_PATTERN, "examples": ["201"],
                 "description": "the user whose phone rings first"},
        "to": {"type": "string", "minLength": 1, "maxLength": 256,
               "examples": ["+4930123456", "030 123456", "tel:+49-30-123456", "202"],
               "description": "a phone number as typed (+49 30 123456, 030/123456, 12), a "
                              "local user, or a sip:/sips:/tel:/callto:/phone: URI"},
        **{name: _nullable(field) for name, field in _OPTIONAL_CALL_FIELDS.items()},
    },
}

#: ``POST /v1/links``
LINK_REQUEST: Final[JsonSchema] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["user", "to"],
    "examples": [{"user": "201", "to": "+4930123456", "ttl": 3600}],
    "properties": {
        "user": {"type": "string", "pattern": USER_PATTERN, "examples": ["201"]},
        "to": {"type": "string", "minLength": 1, "maxLength": 256,
               "examples": ["+4930123456"]},
        "ttl": {"type": "integer", "minimum": 60,
                "description": "seconds the link works (at most [links] max_ttl)"},
    },
}

COMPONENTS: Final[dict[str, JsonSchema]] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string", "description": "stable, for programs"},
                           "message": {"type": "string", "description": "for people"}}}},
    },
    "CallRequest": CALL_REQUEST,
    "LinkRequest": LINK_REQUEST,
    "ContactRequest": {
        "type": "object", "additionalProperties": False, "required": ["name", "numbers"],
        "examples": [{"name": "Erika Mustermann", "numbers": ["030 123456"]}],
        "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 200},
                       "numbers": {"type": "array", "minItems": 1, "maxItems": 10,
                                   "items": {"type": "string", "maxLength": 64}},
                       "url": {"type": "string"}, "owner": {"type": "string"}},
    },
    "Contact": {
        "type": "object", "required": ["id", "name", "numbers"],
        "properties": {"id": {"type": "integer"}, "owner": {"type": "string"},
                       "name": {"type": "string"},
                       "numbers": {"type": "array", "items": {"type": "string"}},
                       "url": _nullable({"type": "string"})},
    },
    "ContactList": {
        "type": "object", "required": ["contacts"],
        "properties": {"contacts": {"type": "array", "items": _ref("Contact")}},
    },
    "ContactImport": {
        "type": "object", "required": ["imported", "skipped"],
        "properties": {"imported": {"type": "integer"}, "skipped": {"type": "integer"}},
    },
    "SignIn": {
        "type": "object",
        "properties": {"user": {"type": "string"}, "password": {"type": "string"},
                       "token": {"type": "string"}},
    },
    "Session": {
        "type": "object", "required": ["user", "admin", "csrf", "expires_at"],
        "properties": {"user": _nullable({"type": "string"}),
                       "admin": {"type": "boolean", "description": "an administrator: an "
                                 "admin token, or a [[users]] admin = true account"},
                       "csrf": {"type": "string"}, "expires_at": _TIME},
    },
    "CamaraError": {
        "type": "object", "required": ["status", "code", "message"],
        "properties": {"status": {"type": "integer"}, "code": {"type": "string"},
                       "message": {"type": "string"}},
    },
    "CamaraCreateCall": {
        "type": "object", "additionalProperties": False, "required": ["caller", "callee"],
        "examples": [{"caller": {"number": "+4930201"}, "callee": {"number": "+4930123456"}}],
        "properties": {
            "caller": {"type": "object", "additionalProperties": False, "required": ["number"],
                       "properties": {"number": {"type": "string",
                                                 "pattern": r"^\+[1-9][0-9]{1,14}$"}}},
            "callee": {"type": "object", "additionalProperties": False, "required": ["number"],
                       "properties": {"number": {"type": "string",
                                                 "pattern": r"^\+[1-9][0-9]{1,14}$"}}},
            "sink": {"type": "string", "format": "uri"},
            "sinkCredential": {"type": "object", "required": [
                "credentialType", "accessToken", "accessTokenExpiresUtc", "accessTokenType"],
                "properties": {"credentialType": {"type": "string", "enum": ["ACCESSTOKEN"]},
                               "accessToken": {"type": "string"},
                               "accessTokenExpiresUtc": {"type": "string",
                                                         "format": "date-time"},
                               "accessTokenType": {"type": "string", "enum": ["bearer"]}}},
            "recordingEnabled": {"type": "boolean",
                                 "description": "true: 422 RECORDING_NOT_SUPPORTED"},
        },
    },
    "CamaraCall": {
        "type": "object", "required": ["callId", "caller", "callee", "status", "createdAt"],
        "properties": {
            "callId": {"type": "string"},
            "caller": {"type": "object", "properties": {"number": {"type": "string"}}},
            "callee": {"type": "object", "properties": {"number": {"type": "string"}}},
            "status": {"type": "string", "enum": [
                "initiating", "callingCaller", "callingCallee", "connected", "disconnected",
                "failed"]},
            "createdAt": _TIME,
            "recordingEnabled": {"type": "boolean"},
        },
    },
    "Link": {
        "type": "object", "required": ["token", "path", "url", "user", "to", "expires_at"],
        "properties": {
            "token": {"type": "string"},
            "path": {"type": "string", "description": "/c/<token>"},
            "url": _nullable({"type": "string", "description": "[links] base_url + path"}),
            "user": {"type": "string"},
            "to": {"type": "string"},
            "expires_at": _TIME,
        },
    },
    "LinkInfo": {
        "type": "object", "required": ["user", "to", "expires_at", "used"],
        "properties": {"user": {"type": "string"}, "to": {"type": "string"},
                       "expires_at": _TIME, "used": {"type": "boolean"}},
    },
    "CallEvent": {
        "type": "object", "required": ["state", "time", "sip_code", "detail"],
        "properties": {
            "state": {"type": "string", "enum": [s.value for s in CallState]},
            "time": _TIME,
            "sip_code": _nullable({"type": "integer"}),
            "detail": _nullable({"type": "string"}),
        },
    },
    "Call": {
        "type": "object",
        "required": ["id", "user", "to", "mode", "state", "cause", "created_at", "ended_at",
                     "device", "auto_answer", "direction", "caller", "contact"],
        "properties": {
            "id": {"type": "string", "pattern": CALL_ID_PATTERN},
            "user": {"type": "string"},
            "to": {"type": "string", "description": "E.164 for numbers (with [numbers])"},
            "mode": {"type": "string", "enum": [*(m.value for m in Mode), INBOUND_MODE]},
            "state": {"type": "string", "enum": [s.value for s in CallState]},
            "cause": _nullable({"type": "string", "enum": [c.value for c in Cause]}),
            "direction": {"type": "string", "enum": [d.value for d in Direction]},
            "caller": _nullable({"type": "string", "description": "inbound: the caller's "
                                 "number (E.164 where it parses); null: anonymous"}),
            "contact": _nullable({"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"}, "url": {"type": "string"}},
                "description": "inbound: who is calling (phonebook or CRM lookup)"}),
            "created_at": _TIME,
            "ended_at": _nullable(_TIME),
            "device": _nullable({"type": "string"}),
            "auto_answer": {"type": "boolean"},
            "metadata": _nullable({"type": "object"}),
            "events": {"type": "array", "items": _ref("CallEvent"),
                       "description": "every state the call entered, oldest first"},
        },
    },
    "CallList": {
        "type": "object", "required": ["calls", "next"],
        "properties": {
            "calls": {"type": "array", "items": _ref("Call")},
            "next": {"type": ["string", "null"], "format": "date-time",
                     "description": "when there may be more: ask again with before= this "
                                    "(the page's last millisecond; a page holds every call "
                                    "of it, so it can be a little longer than limit)"},
            "unavailable_workers": {"type": "array", "items": {"type": "integer"},
                                    "description": "workers that did not answer"},
        },
    },
    "WebhookStatus": {
        "type": "object",
        "required": ["webhook", "target", "delivered", "failed_attempts", "given_up",
                     "queued", "last_delivered_at", "last_error", "last_error_at"],
        "properties": {
            "webhook": {"type": ["integer", "null"], "minimum": 1,
                        "description": "the [[webhooks]] entry (1, 2, ... as configured); "
                                       "null: the CAMARA sinks"},
            "target": {"type": "string",
                       "description": "the webhook URL without credentials, query and the "
                                      "path past its first segment (secrets live there), "
                                      "or camara-sinks (every CAMARA sink together)"},
            "delivered": {"type": "integer", "minimum": 0},
            "failed_attempts": {"type": "integer", "minimum": 0,
                                "description": "each is retried until max_age"},
            "given_up": {"type": "integer", "minimum": 0},
            "queued": {"type": "integer", "minimum": 0,
                       "description": "waiting, in flight included"},
            "last_delivered_at": {"type": ["string", "null"], "format": "date-time"},
            "last_error": {"type": ["string", "null"]},
            "last_error_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "WebhookStatusList": {
        "type": "object", "required": ["webhooks"],
        "properties": {
            "webhooks": {"type": "array", "items": _ref("WebhookStatus")},
            "unavailable_workers": {"type": "array", "items": {"type": "integer"}},
        },
    },
    "Registration": {
        "type": "object",
        "required": ["user", "contact", "transport", "source", "expires_in"],
        "properties": {
            "user": {"type": "string"},
            "contact": {"type": "string"},
            "instance": _nullable({"type": "string"}),
            "transport": {"type": "string"},
            "source": {"type": "string"},
            "expires_in": {"type": "integer", "minimum": 0},
            "q": {"type": "number"},
            "user_agent": _nullable({"type": "string"}),
            "registered_at": _TIME,
            "path": {"type": "array", "items": {"type": "string"}},
        },
    },
    "RegistrationList": {
        "type": "object", "required": ["registrations"],
        "properties": {"registrations": {"type": "array", "items": _ref("Registration")}},
    },
    "Health": {
        "type": "object", "required": ["status", "calls", "registrations"],
        "properties": {
            "status": {"type": "string", "enum": ["ok"]},
            "calls": {"type": "integer", "minimum": 0},
            "relayed_calls": {"type": "integer", "minimum": 0},
            "registrations": {"type": "integer", "minimum": 0},
            "sip_transactions": {"type": "integer", "minimum": 0},
            "upstream": {"type": "object", "properties": {"state": {"type": "string"}}},
        },
    },
    "Upstream": {
        "type": "object", "required": ["state", "registrar", "aor"],
        "properties": {
            "state": {"type": "string"},
            "phase": {"type": "string"},
            "registrar": {"type": "string"},
            "aor": {"type": "string"},
            "peer": _nullable({"type": "string"}),
            "last_status": _nullable({"type": "integer"}),
            "last_reason": _nullable({"type": "string"}),
            "failures": {"type": "integer"},
            "expires_in": _nullable({"type": "number"}),
            "next_attempt_in": _nullable({"type": "number"}),
        },
    },
}

_ERROR_TEXT: Final = {
    400: "the body or a query value is not what it must be (invalid_json, invalid_query)",
    401: "no or wrong credentials",
    403: "not this principal's (forbidden), not from this address (forbidden_source), "
         "refused by [[policy]] (destination_forbidden), or a web session's request from "
         "another site or without its CSRF token (cross_site, csrf)",
    404: "no such call, user or resource; a link that is not valid (invalid_link)",
    405: "method not allowed here (the Allow header lists those that are)",
    409: "the user has no registered device (user_not_registered) or is busy (user_busy)",
    410: "the link has expired (link_expired) or has been used (link_used)",
    413: "request body too large",
    415: "the body must be JSON (Content-Type: application/json)",
    502: "with --workers: the worker that holds it answered nonsense (bad_worker_reply)",
    422: "a field is invalid (invalid_request, invalid_destination, invalid_number, "
         "invalid_header, no_route)",
    429: "a [[policy]] cap (rate_limited; Retry-After says when to try again)",
    503: "overloaded, no free media port, or a worker restarting (Retry-After)",
}


class Auth(enum.Enum):
    """What an operation takes as credentials (its OpenAPI ``security``)."""

    BEARER = "bearer"  #: an [api] token
    BEARER_OR_BASIC = "bearer or basic"  #: or HTTP Basic with the SIP account
    #: or the web page's session cookie (same origin; X-CSRF-Token on changes)
    BEARER_OR_SESSION = "bearer or session"
    NONE = "none"  #: none (the document itself, /healthz, a link's own token)


@dataclass(frozen=True, slots=True)
class Param:
    """A query parameter."""

    name: str
    schema: JsonSchema
    description: str = ""
    required: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    """One documented success response."""

    status: int
    description: str
    schema: str | None = None  #: a component name (JSON), None: no JSON body
    content_type: str = "application/json"
    headers: tuple[str, ...] = ()  #: header names it carries (Location, ...)
    #: OpenAPI links: name -> (operationId, parameter, runtime expression)
    links: tuple[tuple[str, str, str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Operation:
    """What one method of one route does, for the OpenAPI document."""

    operation_id: str
    summary: str
    replies: tuple[Reply, ...]
    errors: tuple[int, ...] = ()  #: error statuses it may answer (the Error document)
    params: tuple[Param, ...] = ()
    body: str | None = None  #: request body component name
    auth: Auth = Auth.BEARER
    tags: tuple[str, ...] = ()
    description: str = ""
    error_schema: str = "Error"  #: CAMARA's routes answer errors as CamaraError


@dataclass(frozen=True, slots=True)
class DocumentedPath:
    """A route as the document shows it: its path template and its path parameters."""

    template: str
    operations: Mapping[str, Operation]
    path_params: tuple[Param, ...] = field(default=())


def openapi_document(paths: Iterable[DocumentedPath], *, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``paths`` (HEAD is not listed: it is GET without body)."""
    out: dict[str, Any] = {}
    for path in paths:
        item: dict[str, Any] = {}
        for method, op in sorted(path.operations.items()):
            item[method.lower()] = _operation(op, path.path_params)
        out[path.template] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": "sipdial", "version": version,
                 "description": "Click-to-dial: ring a user's phone, then connect it to "
                                "the number (REFER or bridge). Errors are always "
                                '{"error": {"code", "message"}}.'},
        "paths": out,
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "an [api] token (a user's, or '*' for admin)"},
                "basic": {"type": "http", "scheme": "basic",
                          "description": "a SIP account's user id and password"},
                "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                            "description": "the web page's session (POST /v1/session): "
                                           "only from the page's own origin, and with "
                                           "its X-CSRF-Token on every change"},
            },
        },
    }


def _operation(op: Operation, path_params: tuple[Param, ...]) -> dict[str, Any]:
    doc: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
    if op.description:
        doc["description"] = op.description
    if op.tags:
        doc["tags"] = list(op.tags)
    params = [_param(p, "path") for p in path_params] + [_param(p, "query") for p in op.params]
    if params:
        doc["parameters"] = params
    if op.body is not None:
        doc["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": _ref(op.body)}}}
    responses: dict[str, Any] = {}
    for reply in op.replies:
        response: dict[str, Any] = {"description": reply.description}
        if reply.schema is not None or reply.content_type != "application/json":
            schema = _ref(reply.schema) if reply.schema is not None else {"type": "string"}
            response["content"] = {reply.content_type: {"schema": schema}}
        if reply.headers:
            response["headers"] = {h: {"schema": {"type": "string"}} for h in reply.headers}
        if reply.links:
            response["links"] = {name: {"operationId": target,
                                        "parameters": {param: expression}}
                                 for name, target, param, expression in reply.links}
        responses[str(reply.status)] = response
    for status in op.errors:
        response = {"description": _ERROR_TEXT[status],
                    "content": {"application/json": {"schema": _ref(op.error_schema)}}}
        if status == 405:
            response["headers"] = {"Allow": {"schema": {"type": "string"}}}
        if status in (429, 503):
            response["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
        responses[str(status)] = response
    doc["responses"] = responses
    if op.auth is Auth.NONE:
        doc["security"] = []
    elif op.auth is Auth.BEARER_OR_BASIC:
        doc["security"] = [{"bearer": []}, {"basic": []}]
    elif op.auth is Auth.BEARER_OR_SESSION:
        doc["security"] = [{"bearer": []}, {"session": []}]
    else:
        doc["security"] = [{"bearer": []}]
    return doc


def _param(p: Param, where: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": p.name, "in": where, "schema": p.schema,
                           "required": True if where == "path" else p.required}
    if p.description:
        doc["description"] = p.description
    return doc
