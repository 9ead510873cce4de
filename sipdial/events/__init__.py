"""Live call events: names (:mod:`.names`), the hub that publishes them (:mod:`.hub`) to SSE
streams (:mod:`sipdial.api.sse`) and to webhooks (:mod:`.webhooks`, delivered from an outbox
in the store).

Wiring (``sipdial.app``)::

    hub = EventHub(store, reactor, config.webhooks)
    yield hub.start()                         # after store.start(), before calls are taken
    engine.persist -> also hub.publish(record, event)
    build_site(engine, tokens, reactor=reactor, events=hub)
    # at stop: engine.shut_down(); yield hub.stop(); yield store.stop()
"""

from sipdial.events.hub import EventHub, Subscriber, Subscription
from sipdial.events.names import EventName, events_for
from sipdial.events.webhooks import DeliveryPolicy, sign, verify_signature

__all__ = [
    "DeliveryPolicy",
    "EventHub",
    "EventName",
    "Subscriber",
    "Subscription",
    "events_for",
    "sign",
    "verify_signature",
]
