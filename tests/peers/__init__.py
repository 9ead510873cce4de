"""Real SIP peers for integration tests, all on 127.0.0.1.

* :class:`tests.peers.baresip.Baresip`: baresip 1.0 phone driven over ctrl_tcp.
* :class:`tests.peers.sipp.Sipp`: SIPp runs of ``tests/peers/scenarios/*.xml``.
* :class:`tests.peers.pyvoip_phone.PyVoIPPhone`: registering pyVoIP softphone.
* :mod:`tests.peers.ports`: free loopback ports.

Fixtures ``baresip_factory`` and ``sipp_factory`` live in ``tests/conftest.py``.
"""
