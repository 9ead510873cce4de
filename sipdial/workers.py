"""``sipdial serve --workers N``: one sipdial on every core.

One Python process runs one reactor thread, and a click-to-dial call costs ~2.5 ms of it
(loadtest/RESULTS.md): one process tops out at one core. So the supervisor (this module,
no reactor) starts N worker processes, each a whole sipdial (SIP stack, calls, HTTP API,
its own SQLite file), that share the public addresses and route to each other:

* **One SIP address.** Every worker binds the configured UDP address with
  ``SO_REUSEPORT``; the kernel hands each source address:port to one of them, so a phone's
  retransmissions, CANCEL and ACK reach the worker that has its transaction. A call is
  owned by the worker that started it (HTTP, or the phone's INVITE), and every identifier
  that worker makes — Via branches, dialog tags, Call-IDs, the call id, hence the REFER's
  ``x-c2d`` — begins with its index (:class:`sipdial.sip.Shard`). A worker that receives
  a message another one owns (the destination's 200, the phone's BYE or NOTIFY, the referred
  INVITE) hands it over the mesh (:class:`sipdial.transport.Mesh`, Unix stream sockets
  in a private directory) unparsed but for the few bytes :meth:`Shard.route` reads; the
  owner answers from its own socket on the same address.
* **TCP and TLS** live in worker 0 (its listeners and every connection); the others hand it
  what they send over a connection, and it hands them what arrives for them. (Spreading
  connections would need the connection's owner to be a route target too: later.)
* **One HTTP port**, likewise shared with ``SO_REUSEPORT``. ``POST /v1/calls`` starts the
  call in the worker that accepted the connection; ``GET``/``DELETE /v1/calls/{id}`` are
  answered by the owner named in the id, over its loopback port (:class:`WorkerHttp`),
  ``GET /v1/calls`` by all of them, merged.
* **Registrations** are replicated: a worker that takes a REGISTER tells the others
  (mesh ``R``), a restarted one asks them for theirs (``H``); each keeps them in its file.
* **The call log**: each worker writes its own SQLite file (``<name>.w<k>.db``) with one
  writer thread, as a single process does; nothing is shared, nothing waits on another
  process's lock.
* **A worker that dies** is started again (backing off if it keeps dying); at start it
  reads its own file, so the calls it held are ended ``interrupted`` and published to the
  webhooks like after a crash of a single process; the other workers carry on.
* **Events**: each worker publishes its own calls' events and delivers its own webhooks
  (from its own outbox); event and delivery ids are ≡ the worker's index (mod N), so no two
  workers ever send the same id. ``GET /v1/events`` at any worker streams every worker's
  events: a worker with SSE clients asks the others to forward theirs (only then), and a
  client's position is a cursor of every worker's last id, its SSE ``id:``, from which
  ``Last-Event-ID`` resumes exactly (:mod:`sipdial.events.merged`).

* **Password guessing**: every failure and every new trust is told to the others (mesh
  ``G``), so N workers count like one process (:mod:`sipdial.guard`).
* **A referred INVITE without ``x-c2d``** (a phone that drops the Refer-To's parameters)
  reaches the worker waiting for that user and number: the workers tell each other
  (mesh ``W``, :class:`sipdial.sip.Referrals`).

Not shared: ``[calls] max_concurrent`` is split, each worker taking its share (rounded up);
``[upstream]`` registration is done by worker 0 only (the others answer ``GET
/v1/upstream`` from worker 0 and leave it out of ``/healthz``).

The same design extends to several machines: Kamailio's ``dispatcher`` in front sends new
calls and REGISTERs to one of them (hash over Call-ID or source), responses and in-dialog
requests follow the Via and Contact/Record-Route that the owner wrote — the owner's address
is what its index is here — and the replication of registrations moves from the mesh to a
shared location service (Kamailio's ``usrloc`` with ``add_path``, which tests/integration
already exercise).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from glob import escape as glob_escape
from typing import Any

from sipdial.config import ConfigError, load_config
from sipdial.pdeathsig import die_with_parent
from sipdial.worker_role import WorkerRole

__all__ = ["main", "supervise"]

log = logging.getLogger("sipdial.workers")

#: seconds a worker may take to start before the supervisor gives up on it
START_TIMEOUT = 60.0
#: restart back-off: the first restart at once, then doubling up to the maximum; a worker
#: that ran this long counts as healthy again
RESTART_MIN = 0.5
RESTART_MAX = 30.0
HEALTHY_AFTER = 60.0
STOP_GRACE = 8.0  # seconds the workers get to stop after SIGTERM before SIGKILL


# ----------------------------------------------------------------------------- supervisor


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready: bool = False
    failures: int = 0  #: exits in a row without running HEALTHY_AFTER seconds
    restart_at: float | None = None


class _Supervisor:
    def __init__(self, config_path: str, count: int, ready_file: str | None) -> None:
        self.config_path = config_path
        self.count = count
        self.ready_file = ready_file
        self.mesh_dir = tempfile.mkdtemp(prefix="sipdial-workers-")
        os.chmod(self.mesh_dir, 0o700)
        self.secret = os.urandom(32)
        self.workers = [_Worker(i) for i in range(count)]
        self.sip_ports: dict[str, int] = {}
        self.http_port: int | None = None
        self.stopping = False
        self.announced = False
        self.others_started = False  #: workers 1..N-1 were started (once worker 0 was ready)
        self.id_floor = (0, 0)

    def role_args(self, index: int, *, rejoin: bool = False) -> list[str]:
        args = [sys.executable, "-m", "sipdial.workers", "--config", self.config_path,
                "--mesh", self.mesh_dir, "--index", str(index), "--count", str(self.count)]
        if self.sip_ports:
            args += ["--sip-ports", json.dumps(self.sip_ports)]
        if self.http_port is not None:
            args += ["--http-port", str(self.http_port)]
        args += ["--id-floor", f"{self.id_floor[0]},{self.id_floor[1]}",
                 "--supervisor", str(os.getpid())]
        if rejoin:
            args.append("--rejoin")
        return args

    def reload(self) -> None:
        """SIGHUP: every worker reloads the file (each checks it again and says what it
        applied); a file that does not load is refused here, once, and nobody reloads.
        Workers started later read the file anyway."""
        from sipdial.app import check_config

        try:
            check_config(load_config(self.config_path), phonebook=False)  # restart-only
        except (ConfigError, OSError) as exc:
            log.error("reload refused: %s: %s (the workers keep the previous configuration)",
                      self.config_path, exc)
            return
        told = 0
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGHUP)
                told += 1
        log.info("reload: told %d of %d workers", told, self.count)

    def start(self, worker: _Worker) -> None:
        try:
            os.unlink(os.path.join(self.mesh_dir, f"w{worker.index}.ready"))
        except FileNotFoundError:
            pass
        env = dict(os.environ, SIPDIAL_WORKER_SECRET=self.secret.hex())
        # a restart while others run: their location tables are current, its file is not
        rejoin = worker.restart_at is not None and any(
            w.process is not None and w.ready for w in self.workers if w is not worker)
        worker.process = subprocess.Popen(self.role_args(worker.index, rejoin=rejoin),
                                          env=env, stdin=subprocess.DEVNULL)
        worker.started_at = time.monotonic()
        worker.ready = False
        worker.restart_at = None
        log.info("worker %d started (pid %d)%s", worker.index, worker.process.pid,
                 ", rejoining: registrations from the others" if rejoin else "")

    def worker_ready(self, worker: _Worker) -> bool:
        path = os.path.join(self.mesh_dir, f"w{worker.index}.ready")
        try:
            with open(path, encoding="utf-8") as fh:
                info = json.load(fh)
        except (OSError, ValueError):
            return False
        if worker.index == 0 and not self.sip_ports:
            self.sip_ports = {str(k): int(v) for k, v in info["bound"].items()}
            self.http_port = int(info["http"]["port"])
        worker.ready = True
        return True

    def announce(self) -> None:
        """Every worker is up: write the supervisor's ready file (what `serve` writes)."""
        self.announced = True
        with open(os.path.join(self.mesh_dir, "w0.ready"), encoding="utf-8") as fh:
            info = json.load(fh)
        info["pid"] = os.getpid()
        info["workers"] = [{"index": w.index, "pid": w.process.pid if w.process else None}
                           for w in self.workers]
        for key in ("private_http", "worker", "bound"):
            info.pop(key, None)
        log.info("sipdial ready: %s", json.dumps(info))
        if self.ready_file:
            tmp = f"{self.ready_file}.tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(info, fh)
            os.replace(tmp, self.ready_file)

    def reap(self) -> int | None:
        """Collect exited workers; returns an exit code when the supervisor must give up."""
        for worker in self.workers:
            process = worker.process
            if process is None or process.poll() is None:
                continue
            code = process.returncode
            worker.process = None
            if self.stopping:
                continue
            ran = time.monotonic() - worker.started_at
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            if not self.announced and not worker.ready:
                log.error("worker %d failed to start (%s)", worker.index, how)
                return code if code > 0 else 1
            worker.failures = 0 if ran >= HEALTHY_AFTER else worker.failures + 1
            delay = 0.0 if worker.failures <= 1 else min(
                RESTART_MAX, RESTART_MIN * 2 ** (worker.failures - 2))
            log.error("worker %d (pid %d) died (%s) after %.1f s: restarting in %.1f s; "
                      "its calls end as interrupted, the other workers carry on",
                      worker.index, process.pid, how, ran, delay)
            worker.restart_at = time.monotonic() + delay
        return None

    def step(self) -> int | None:
        """One turn: start what is due, notice readiness. Returns an exit code to stop."""
        now = time.monotonic()
        code = self.reap()
        if code is not None:
            return code
        first = self.workers[0]
        for worker in self.workers:
            if worker.process is None and worker.restart_at is not None \
                    and now >= worker.restart_at and not self.stopping:
                self.start(worker)
        if not self.announced:
            if not first.ready and first.process is not None:
                if self.worker_ready(first) and not self.others_started:
                    self.others_started = True
                    for worker in self.workers[1:]:
                        if worker.process is None and worker.restart_at is None:
                            self.start(worker)
                elif now - first.started_at > START_TIMEOUT:
                    log.error("worker 0 did not start within %g s", START_TIMEOUT)
                    return 1
            if first.ready:
                pending = [w for w in self.workers[1:] if not w.ready]
                for worker in pending:
                    if worker.process is not None and not self.worker_ready(worker) \
                            and now - worker.started_at > START_TIMEOUT:
                        log.error("worker %d did not start within %g s", worker.index,
                                  START_TIMEOUT)
                        return 1
                if all(w.ready for w in self.workers):
                    self.announce()
        else:
            for worker in self.workers:
                if worker.process is not None and not worker.ready and self.worker_ready(worker):
                    log.info("worker %d ready again (pid %d)", worker.index,
                             worker.process.pid)
        return None

    def stop(self) -> None:
        """SIGTERM every worker but 0 and wait, then worker 0: it holds the TCP/TLS
        connections, over which the others' last BYEs and CANCELs still go out."""
        self.stopping = True
        self._stop([w.process for w in self.workers[1:] if w.process is not None])
        self._stop([w.process for w in self.workers[:1] if w.process is not None])
        shutil.rmtree(self.mesh_dir, ignore_errors=True)

    @staticmethod
    def _stop(running: list[subprocess.Popen[bytes]]) -> None:
        for process in running:
            try:
                process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_GRACE
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop: killed", process.pid)
                process.kill()
                process.wait()


def supervise(config_path: str, count: int, ready_file: str | None = None) -> int:
    """Run ``count`` workers until SIGTERM/SIGINT; restart any that dies. Exit code."""
    logging.basicConfig(level=os.environ.get("SIPDIAL_LOG", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(config_path)
    except (ConfigError, OSError) as exc:
        print(f"sipdial: {config_path}: {exc}", file=sys.stderr)
        return 2
    store_path = config.store.sqlite_path
    lock = _lock(store_path)
    if lock is None:
        print(f"sipdial: another sipdial runs on {store_path} (its lock {store_path}.lock "
              "is held): not starting a second one on the same ports and files",
              file=sys.stderr)
        return 2
    watched = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    supervisor = _Supervisor(config_path, count, ready_file)
    supervisor.id_floor = _id_floor(store_path, count)
    code = 0
    try:
        supervisor.start(supervisor.workers[0])
        while True:
            result = supervisor.step()
            if result is not None:
                code = result
                break
            # woken by a worker's exit (SIGCHLD) or readiness (SIGUSR1), a stop signal,
            # or the next restart or start-up check that is due
            info = signal.sigtimedwait(watched, 0.2)
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                log.info("stopping %d workers", count)
                break
            if info is not None and info.si_signo == signal.SIGHUP:
                supervisor.reload()
    finally:
        supervisor.stop()
        # what came meanwhile (a worker's late "ready", a second SIGTERM) must not act
        # once unblocked: SIGUSR1's default would end this process with status 138
        for signum in watched:
            signal.signal(signum, signal.SIG_IGN)
        while signal.sigtimedwait(watched, 0) is not None:
            pass
        signal.pthread_sigmask(signal.SIG_UNBLOCK, watched)
        os.close(lock)
    log.info("sipdial stopped")
    return code


def _lock(store_path: str) -> int | None:
    """An exclusive lock beside the store: SO_REUSEPORT would let a second sipdial bind the
    same ports without an error, and share the traffic and the files with this one."""
    import fcntl

    if store_path == ":memory:" or store_path.startswith("file:"):
        return os.open(os.devnull, os.O_RDONLY)
    fd = os.open(f"{store_path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _id_floor(store_path: str, count: int) -> tuple[int, int]:
    """The highest event and delivery ids in the configured file and every worker's: the
    workers continue above them, so no id is used twice when the number of workers changed.
    Files of workers beyond ``count`` (there were more before) are named in a warning: their
    pending webhooks and unfinished calls wait until that many workers run again."""
    import glob
    import sqlite3

    if store_path == ":memory:" or store_path.startswith("file:"):
        return (0, 0)
    floor = [0, 0]
    for index, path in _worker_files(store_path, glob.glob):
        if index >= count:
            log.warning("%s belongs to worker %d of an earlier run with more workers: its "
                        "pending webhook deliveries and unfinished calls are not handled "
                        "by these %d", path, index, count)
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                row = conn.execute("SELECT (SELECT coalesce(max(id), 0) FROM events), "
                                   "(SELECT coalesce(max(id), 0) FROM webhook_outbox)").fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            continue  # not created yet, or not ours
        floor = [max(floor[0], int(row[0])), max(floor[1], int(row[1]))]
    return floor[0], floor[1]


def _worker_files(store_path: str, glob: Any) -> list[tuple[int, str]]:
    root, ext = os.path.splitext(store_path)
    found = [(0, store_path)] if os.path.exists(store_path) else []
    for path in glob(f"{glob_escape(root)}.w*{glob_escape(ext or '.db')}"):
        middle = path[len(root) + 2 : len(path) - len(ext or ".db")]
        if middle.isdigit():
            found.append((int(middle), path))
    return found


# ----------------------------------------------------------------------------- worker


def main(argv: Sequence[str] | None = None) -> int:
    """A worker process: ``python -m sipdial.workers`` as the supervisor starts it."""
    parser = argparse.ArgumentParser(prog="sipdial-worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--mesh", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--sip-ports", default="{}")
    parser.add_argument("--http-port", type=int)
    parser.add_argument("--id-floor", default="0,0")
    parser.add_argument("--supervisor", type=int, required=True)
    parser.add_argument("--rejoin", action="store_true",
                        help="restarted while others run: take registrations from them")
    args = parser.parse_args(argv)
    die_with_parent()
    if os.getppid() != args.supervisor:  # it died before the line above took effect
        return 1
    # the supervisor blocks these to wait for them; a worker takes them as usual. A reload
    # asked before this worker runs is moot (it reads the file now): not a default death
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD, signal.SIGTERM,
                                                signal.SIGINT, signal.SIGUSR1,
                                                signal.SIGHUP})
    secret = bytes.fromhex(os.environ.pop("SIPDIAL_WORKER_SECRET", "")) or os.urandom(32)
    events, _, deliveries = args.id_floor.partition(",")
    role = WorkerRole(index=args.index, count=args.count, mesh_dir=args.mesh, secret=secret,
                      sip_ports={str(k): int(v) for k, v in json.loads(args.sip_ports).items()},
                      http_port=args.http_port,
                      id_floor=(int(events), int(deliveries)), rejoin=args.rejoin)
    from sipdial.app import serve

    return serve(args.config, role.ready_file(), role=role)


if __name__ == "__main__":
    sys.exit(main())
