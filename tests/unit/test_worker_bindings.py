"""Registrations as the workers' mesh carries them (sipdial.app): JSON lists, a restarted
worker's whole table in a few messages of bounded size, and nothing lost on the way."""

from __future__ import annotations

import json

from sipdial.app import _binding_document, _binding_documents, _replicated_bindings
from sipdial.registrar import Binding
from sipdial.sip import Peer, parse_name_addr_list


def binding(n: int) -> Binding:
    return Binding(user=str(200 + n % 7), contact=f"sip:{n}@10.0.{n // 250}.{n % 250}:5060",
                   instance=None if n % 2 else f"<urn:uuid:{n:08d}>",
                   peer=Peer("tcp" if n % 3 == 0 else "udp", "192.0.2.7", 5060 + n),
                   expires_at=2e9 + n, q=0.5, user_agent="Yealink \u00e9", call_id=f"r{n}",
                   cseq=n, registered_at=1.8e9 + n,
                   path=tuple(parse_name_addr_list("<sip:proxy.example;lr>")) if n == 5 else ())


def test_a_whole_table_goes_in_bounded_messages_and_comes_back_the_same() -> None:
    table = [binding(n) for n in range(2000)]
    documents = _binding_documents(table, budget=20_000)
    assert len(documents) > 10
    assert all(len(d) <= 20_000 + 2 for d in documents)
    back = [pair for d in documents for pair in _replicated_bindings(d)]
    assert [b for b, removed in back] == table
    assert not any(removed for _, removed in back)


def test_an_empty_table_is_said_too() -> None:
    """A rejoining worker waits for the others' table: it must come even when empty."""
    assert _binding_documents([]) == [b"[]"]
    assert _replicated_bindings(b"[]") == []


def test_one_change_and_a_removal() -> None:
    [(got, removed)] = _replicated_bindings(_binding_document(binding(5), True))
    assert removed and got == binding(5)


def test_what_does_not_parse_is_dropped_and_the_rest_kept() -> None:
    good = json.loads(_binding_document(binding(1), False))
    bad = [{"removed": False, "record": {"user": "x"}}, "nonsense", *good]
    assert [b for b, _ in _replicated_bindings(json.dumps(bad).encode())] == [binding(1)]
    assert _replicated_bindings(b"{not json") == []
    assert _replicated_bindings(b'{"removed": true}') == []


def test_each_worker_takes_its_own_slice_of_the_rtp_ports() -> None:
    from sipdial.app import _media_ports
    from sipdial.worker_role import WorkerRole

    def role(index: int, count: int) -> WorkerRole:
        return WorkerRole(index=index, count=count, mesh_dir="/x", secret=b"")

    assert _media_ports(20000, 29998, None) == (20000, 29998)
    slices = [_media_ports(20000, 29998, role(k, 3)) for k in range(3)]
    assert slices == [(20000, 23330), (23332, 26662), (26664, 29994)]
    assert all(low % 2 == 0 and high % 2 == 0 for low, high in slices)
    assert _media_ports(20000, 20002, role(2, 3)) == (20000, 20002)  # too few: shared
    assert _media_ports(0, 0, role(1, 2)) == (0, 0)  # any free port


def test_each_worker_takes_its_share_of_max_concurrent() -> None:
    from dataclasses import replace

    from sipdial.app import _worker_share
    from sipdial.worker_role import WorkerRole
    from tests.unit.simnet import make_config

    config = make_config(max_concurrent=1001)
    assert config.calls.max_concurrent == 1001
    assert _worker_share(config, None) is config
    shares = [_worker_share(config, WorkerRole(index=k, count=3, mesh_dir="/x", secret=b""))
              for k in range(3)]
    assert [s.calls.max_concurrent for s in shares] == [334, 334, 334]
    assert replace(shares[0], calls=config.calls) == config  # nothing else changes


def test_referrals_between_workers_parse_forget_and_answer_a_hello() -> None:
    from sipdial.app import _MeshReferrals
    from sipdial.sip import Referrals

    class FakeMesh:
        index, count = 0, 3

        def __init__(self) -> None:
            self.sent: list[tuple[int | None, bytes]] = []

        def send_referral(self, worker: int | None, document: bytes) -> None:
            self.sent.append((worker, document))

    mesh = FakeMesh()
    watch = _MeshReferrals(Referrals(), mesh)  # type: ignore[arg-type]
    watch.waiting("00c1", "201", "+4930123456")
    assert json.loads(mesh.sent[-1][1]) == [0, "+", "00c1", "201", "+4930123456"]
    assert mesh.sent[-1][0] is None  # to every other worker
    watch.received(b'[2,"+","02c9","202","+4930999"]')
    for bad in (b"[", b'[0,"+","x","a","b"]', b'[7,"+","x","a","b"]', b'[1,"?","x"]',
                b'["1","+","x","a","b"]', b'[1,"+",5,"a","b"]', b"{}"):
        watch.received(bad)  # our own index, no such worker, nonsense: dropped
    assert len(watch.table) == 2
    watch.restarted(2)  # worker 2's calls are gone; it is told ours
    assert watch.table.of_worker(2) == []
    assert mesh.sent[-1][0] == 2 and json.loads(mesh.sent[-1][1])[2] == "00c1"
    watch.done("00c1")
    assert len(watch.table) == 0 and json.loads(mesh.sent[-1][1]) == [0, "-", "00c1"]
