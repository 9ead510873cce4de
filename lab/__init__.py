"""A lab anyone can start: ``scripts/lab`` (issue 8 §4).

Kamailio in front of sipdial, two baresip phones (201, 202) and a SIPp destination, each in
its own network namespace when run as root (``ip netns``), else all on loopback ports. It
prints what to try, and stops everything — processes and namespaces — on Ctrl-C or SIGTERM.
``--self-test`` places one REFER and one bridge call through it and exits 0 only if both
complete. Independent of sipdial's code: it runs ``python -m sipdial serve`` like a user.
"""

from lab.ctrl import CtrlError, command
from lab.net import LoopbackNetwork, NetnsNetwork, NetworkError, netns_available, remove_stale
from lab.nodes import ProgramError, Secrets
from lab.runner import Lab

__all__ = [
    "CtrlError",
    "Lab",
    "LoopbackNetwork",
    "NetnsNetwork",
    "NetworkError",
    "ProgramError",
    "Secrets",
    "command",
    "netns_available",
    "remove_stale",
]
