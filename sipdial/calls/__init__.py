"""Calls: click-to-dial calls, the calls phones place through sipdial, and their legs.

Sans-IO: everything here runs on the reactor thread with the time passed in, sends through
the :class:`~sipdial.ua.UserAgent` and never touches a socket. The behaviour is in tables, one
per machine, each readable on one screen:

========================================  =================================================
:data:`states.TRANSITIONS`                the click-to-dial call (:class:`ClickToDial`)
:data:`legs.UAC_TABLE`, ``UAS_TABLE``     one INVITE dialog, sent / received
:data:`b2bua.RELAY_TABLE`                 a phone's call relayed to its destination (B2BUA)
:data:`bridge.THIRD_PARTY_TABLE`          bridge mode: the phone joined to the target (3PCC)
:data:`transfer.TRANSFER_TABLE`           REFER mode: the phone's first dialog after REFER
========================================  =================================================

The rooms' front doors:

* :class:`CallService` — starts calls (:class:`CallRequest` in, :class:`ClickToDial` out, or
  :class:`CallRefused` with a :class:`Refusal`), keeps the live ones, writes each state
  change to a :class:`CallStore` and publishes it to an :class:`EventSink`.
* :class:`InboundRouter` — the phones' own INVITEs (:class:`~sipdial.ua.IncomingInvite`):
  digest authentication (407), routing, relaying.
* :class:`Router` — where a destination goes (a local user's devices, a route, a URI's host;
  in PBX mode, :class:`Pbx`, the office PBX for users and unrouted numbers).

The vocabulary every other room uses: :class:`CallState`, :class:`Cause`, :class:`Mode`.
"""

from sipdial.calls.autoanswer import DEFAULT_RULES, AutoAnswerRule, rules_from_config
from sipdial.calls.clicktodial import ClickToDial
from sipdial.calls.inbound import InboundRouter
from sipdial.calls.media import MediaPort, PromptSource, Tone
from sipdial.calls.routing import (
    Destination,
    NumericResolver,
    OnResolved,
    Pbx,
    Resolver,
    Router,
    Target,
    escape_user,
    local_hosts,
    registrar_route,
)
from sipdial.calls.service import (
    CallObserver,
    CallRefused,
    CallRequest,
    CallService,
    CallStore,
    EventSink,
    LoadGauge,
    ReferralWatch,
    Refusal,
)
from sipdial.calls.states import CallState, Cause, Mode

__all__ = [
    "DEFAULT_RULES",
    "AutoAnswerRule",
    "CallObserver",
    "CallRefused",
    "CallRequest",
    "CallService",
    "CallState",
    "CallStore",
    "Cause",
    "ClickToDial",
    "Destination",
    "EventSink",
    "InboundRouter",
    "LoadGauge",
    "MediaPort",
    "Mode",
    "NumericResolver",
    "OnResolved",
    "Pbx",
    "PromptSource",
    "ReferralWatch",
    "Refusal",
    "Resolver",
    "Router",
    "Target",
    "Tone",
    "escape_user",
    "local_hosts",
    "registrar_route",
    "rules_from_config",
]
