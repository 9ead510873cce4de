"""One node of the lab per container: ``python -m lab node ROLE`` (docker/lab/compose.yaml).

The role's configuration is generated exactly as :mod:`lab.runner` does, from the
environment, and the program then replaces this process (``exec``), its log on stdout:

    LAB_KAMAILIO, LAB_SIPDIAL, LAB_PHONE201, LAB_PHONE202, LAB_DEST   the nodes' addresses
    LAB_ADMIN_TOKEN, LAB_PASSWORD_201, LAB_PASSWORD_202              secrets (no defaults)
    LAB_DIR                                                          configs (/tmp/lab)

ROLE is kamailio, sipdial, phone201, phone202 or destination. ``--print`` shows the command
instead of running it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lab.net import Node
from lab.nodes import (
    ProgramError,
    Secrets,
    baresip,
    kamailio,
    sipdial,
    sipdial_config,
    sipp_destination,
)

ROLES = ("kamailio", "sipdial", "phone201", "phone202", "destination")
SIP, HTTP, CTRL, MEDIA = 5060, 8080, 4444, 6000
_ADDRESSES = {"kamailio": "LAB_KAMAILIO", "sipdial": "LAB_SIPDIAL", "phone201": "LAB_PHONE201",
              "phone202": "LAB_PHONE202", "destination": "LAB_DEST"}


def _env(names: list[str]) -> dict[str, str]:
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise ProgramError(f"set {', '.join(missing)} (the lab's containers read their "
                           "addresses and secrets from the environment; no defaults)")
    return {n: os.environ[n] for n in names}


def node_main(argv: list[str]) -> int:
    if not argv or argv[0] not in ROLES:
        print(f"usage: python -m lab node {{{','.join(ROLES)}}} [--print]", file=sys.stderr)
        return 2
    role, show = argv[0], "--print" in argv[1:]
    try:
        env = _env([*_ADDRESSES.values(), "LAB_ADMIN_TOKEN", "LAB_PASSWORD_201",
                    "LAB_PASSWORD_202"])
        ip = {r: env[v] for r, v in _ADDRESSES.items()}
        secrets = Secrets(env["LAB_ADMIN_TOKEN"], {"201": env["LAB_PASSWORD_201"],
                                                   "202": env["LAB_PASSWORD_202"]})
        workdir = Path(os.environ.get("LAB_DIR", "/tmp/lab"))
        node = Node(role, ip[role], None)
        kam = f"{ip['kamailio']}:{SIP}"
        if role == "kamailio":
            program = kamailio(node, SIP, workdir)
        elif role == "sipdial":
            program = sipdial(node, sipdial_config(
                node, SIP, HTTP, f"sip:{kam};lr", f"{ip['destination']}:{SIP}", secrets,
                workdir / "sipdial" / "sipdial.db"), workdir)
            os.environ.update(program.env or {})
        elif role == "destination":
            program = sipp_destination(node, SIP, MEDIA, workdir)
        else:
            user = role.removeprefix("phone")
            program = baresip(node, user, SIP, CTRL, f"{ip['sipdial']}:{SIP}", kam,
                              secrets.passwords[user], workdir)
    except ProgramError as exc:
        print(f"lab node {role}: {exc}", file=sys.stderr)
        return 2
    if show:
        print(" ".join(program.argv))
        return 0
    os.chdir(program.dir)
    os.execv(program.argv[0], program.argv)
