"""``fileflow up`` / ``fileflow down``: the whole distributed stack on one machine.

Started, each in a session of its own with its log under ``<home>/logs/``:

- a Prefect server (PostgreSQL when ``PREFECT_API_DATABASE_CONNECTION_URL`` or ``--database``
  says so, SQLite under ``<home>`` otherwise), then the work pools and deployments
  (:mod:`deployments.setup`). With ``--redis`` its events, messaging caches, concurrency leases
  and background tasks live in Redis (``prefect-redis``) instead of the server's memory, and
  with ``--server-workers N`` (PostgreSQL and Redis) the API is N processes and the loop
  services (scheduler, triggers, event persister ...) one more, as Prefect's scaling guide does;
- a warm LibreOffice (unoserver) shared by the office workers;
- one mediator worker (pool ``fileflow-mediator``): a warm worker (:mod:`fileflow.server.worker`) that
  runs up to ``mediator_limit`` files' flows in its own process, or with
  ``mediator_type="process"`` Prefect's process worker naming itself in its claims
  (:mod:`fileflow.server.worker.process`; a fresh engine process per file);
- N workers per converter pool: N warm workers, each serving every converter pool, or with
  ``worker_type="process"`` N of Prefect's process workers per pool;
- the pending-work exporter;
- the upload API (:mod:`fileflow.server.api`) on ``api_port``, with the tokens of
  ``FILEFLOW_API_TOKENS``, else one made for the stack and kept in ``<home>/api-token`` (mode 0600);
- the resumer of crashed router runs;
- the callback deliverer (:mod:`fileflow.server.deliverer`), and with S3 storage and
  ``FILEFLOW_S3_EVENTS_QUEUE_URL`` set, the consumer of the bucket's notifications
  (:mod:`fileflow.server.s3_events`).

Every one of them runs under a supervisor of its own (:mod:`fileflow.server.supervise`): one that
dies is started again with backoff, and its restarts and crashes are recorded under
``<home>/supervised/`` for ``fileflow status``.

Every process started is recorded in ``<home>/stack.json``; ``down`` stops them (SIGTERM to
each process group, SIGKILL after a grace period) and checks that none is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import converters
from fileflow.home import SUPERVISED_DIR, client_tls_env, stack_file, stack_state
from fileflow.settings import CallbackSettings, LivenessSettings, NotifySettings, S3EventsSettings
from fileflow.names import MEDIATOR_POOL, pool_name
from fileflow.server.supervise import PREDECESSOR_ENV

#: seconds the warm mediator's files in flight get to finish on `fileflow down`; one still going
#: after that ends Crashed and is resumed by the next mediator (its finished steps are cached)
MEDIATOR_GRACE_S = 10

#: database connections the single-process Prefect server on PostgreSQL keeps open (Prefect: 5)
DB_POOL_SIZE = 20

# Latency: a worker asks for due runs every second and may claim them up to 2 s early; Prefect's
# default of 10 s would add up to 10 s before every step on a pool starts.
WORKER_ENV = {
    # riding out a server restart: Prefect's client retries a refused connection (once it had
    # connected) with backoff 2, 4, 8 ... s; 8 retries wait about 8 minutes in all, the default
    # 5 only about one, shorter than a restart of the server on a busy machine
    "PREFECT_CLIENT_MAX_RETRIES": "8",
    "PREFECT_WORKER_QUERY_SECONDS": "1",
    "PREFECT_WORKER_PREFETCH_SECONDS": "2",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "INFO",
}


#: Prefect's settings that move the server's messaging, event ordering, concurrency leases and
#: background tasks (docket) from one process's memory to Redis: what several API processes need
#: to share, and what lets leases and unprocessed events outlive a server restart
def redis_env(url: str) -> dict[str, str]:
    url = with_redis_pool_size(url)
    return {
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_URL": url,
        "PREFECT_SERVER_DOCKET_URL": url,
    }


#: connections each Redis client of the server may open, unless the URL says (``max_connections``):
#: redis-py's default of 100 runs out when a few hundred files wait in one mediator, and the API's
#: requests then fail with "Too many connections"
REDIS_MAX_CONNECTIONS = 1000


def with_redis_pool_size(url: str) -> str:
    from urllib.parse import parse_qsl, urlsplit, urlunsplit

    parts = urlsplit(url)
    if any(key == "max_connections" for key, _ in parse_qsl(parts.query)):
        return url
    query = f"{parts.query}&" if parts.query else ""
    return urlunsplit(parts._replace(query=f"{query}max_connections={REDIS_MAX_CONNECTIONS}"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    home: Path
    port: int = 4200
    workers_per_pool: int = 1
    mediator_limit: int = 32
    mediator_type: str = "warm"
    database_url: str | None = None
    storage_path: Path | None = None
    exporter_port: int = 9464
    #: port of the upload API; 0: a free one, chosen by ``up`` and recorded in stack.json
    api_port: int = 0
    worker_type: str = "warm"
    #: API processes of the Prefect server; more than one needs PostgreSQL and ``redis_url``
    server_workers: int = 1
    #: a Redis database of this stack's own (``redis://host:6379/N``) for the server's messaging
    redis_url: str | None = None
    processes: dict[str, int] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """What makes this configuration impossible, in words for the operator."""
        found = []
        if self.server_workers < 1:
            found.append(f"--server-workers must be at least 1, not {self.server_workers}")
        if self.server_workers > 1:
            if not (self.database_url or "").startswith("postgresql"):
                found.append("--server-workers above 1 needs PostgreSQL (--database): SQLite cannot be shared "
                             "by several API processes")
            if not self.redis_url:
                found.append("--server-workers above 1 needs --redis: the API processes share events, "
                             "leases and background tasks through it")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            found.append(f"--redis must be a redis:// or rediss:// URL, not {self.redis_url!r}")
        for settings in (CallbackSettings, NotifySettings, S3EventsSettings):  # refused before anything starts
            try:
                settings()
            except ValueError as exc:
                found.append(str(exc).replace("\n", " "))
        return found

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def api_token_file(self) -> Path:
        return self.home / "api-token"

    def _api_env(self, env: dict[str, str]) -> dict[str, str]:
        """The upload API's environment: the caller's FILEFLOW_API_TOKENS, else a token of the stack's own."""
        if env.get("FILEFLOW_API_TOKENS"):
            return env
        if not self.api_token_file.exists():
            import secrets

            fd = os.open(self.api_token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
        return {**env, "FILEFLOW_API_TOKENS": json.dumps([self.api_token_file.read_text().strip()])}

    @property
    def state_file(self) -> Path:
        return stack_file(self.home)

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            **WORKER_ENV,
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.home / "prefect-home"),
            # the design's placement: heavy converters on their pools, light ones in the warm
            # mediator's children, where a step costs no flow run, no worker pickup and no process start;
            # a FILEFLOW_PLACEMENT of the caller's own replaces the light ones' list, "{}" puts all on pools
            "FILEFLOW_DEFAULT_PLACEMENT": os.environ.get("FILEFLOW_DEFAULT_PLACEMENT", "pool"),
            "FILEFLOW_PLACEMENT": os.environ.get("FILEFLOW_PLACEMENT", json.dumps(converters.design_placement())),
            # every run (a file's run, a converter step) says it is alive this often;
            # the automations of deployments/liveness.py crash and resume the silent ones
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(LivenessSettings().heartbeat_s),
            **client_tls_env(self.api_url, os.environ),
        }
        if self.redis_url:  # the step locks too (fileflow/engine/locks.py), unless the caller chose others
            env.setdefault("FILEFLOW_LOCK_REDIS_URL", self.redis_url)
        if self.storage_path and env.get("FILEFLOW_STORAGE_KIND", "local") == "local":
            env["FILEFLOW_STORAGE_PATH"] = str(self.storage_path.resolve())
        return env

    def _start(self, name: str, cmd: list[str], env: dict[str, str], predecessor_env: str | None = None) -> int:
        """Start ``cmd`` under its supervisor (:mod:`fileflow.server.supervise`), which starts it
        again whenever it dies; the supervisor's pid (its process group) is what is recorded."""
        log = open(self.home / "logs" / f"{name}.log", "ab")
        supervisor = [sys.executable, "-m", "fileflow.server.supervise", "--name", name, "--home", str(self.home)]
        if predecessor_env:
            supervisor += ["--predecessor-env", predecessor_env]
        proc = subprocess.Popen([*supervisor, "--", *cmd], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=Path(__file__).resolve().parents[1])
        self.processes[name] = proc.pid
        self._save()
        return proc.pid

    def _save(self) -> None:
        state = {"api_url": self.api_url, "port": self.port, "exporter_port": self.exporter_port,
                 "upload_api_url": f"http://127.0.0.1:{self.api_port}", "api_port": self.api_port,
                 "storage_path": str(self.storage_path.resolve()) if self.storage_path else None,
                 "database": _without_password(self.database_url), "server_workers": self.server_workers,
                 "redis": _without_password(self.redis_url), "processes": self.processes}
        self.state_file.write_text(json.dumps(state, indent=2))

    def _wait_http(self, url: str, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"{what} did not answer at {url} within {timeout:g} s; see {self.home / 'logs'}")

    def _check_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=5)
        try:
            client.ping()
        except redis.RedisError as exc:
            raise RuntimeError(f"Redis at {_without_password(self.redis_url)} does not answer: {exc}") from None
        finally:
            client.close()

    def server_env(self, env: dict[str, str]) -> dict[str, str]:
        """The Prefect server's environment: ``env`` with the stack's database, Redis and pool."""
        server_env = dict(env)
        if self.database_url:
            server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.database_url
        if server_env.get("PREFECT_API_DATABASE_CONNECTION_URL", "").startswith("postgresql") and \
                self.server_workers == 1:
            # connections kept open: with Prefect's 5 (and 10 more closed on return) a busy server
            # opened 8-9 PostgreSQL sessions a second; with 20, 0.2 a second and 8-53 % more files
            # an hour (bench/analysis.md). Several API processes would each keep their own 20
            # (PostgreSQL allows 100 in all by default), so they keep Prefect's
            server_env.setdefault("PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE", str(DB_POOL_SIZE))
        if self.redis_url:
            server_env.update(redis_env(self.redis_url))
        # the UI's own API address: Prefect's default is port 4200 whatever --port says
        server_env.setdefault("PREFECT_UI_API_URL", self.api_url)
        return server_env

    def _start_server(self, env: dict[str, str]) -> None:
        server_env = self.server_env(env)
        if self.server_workers > 1:
            # each API process would migrate the database and register block types as it starts,
            # and on a new database two at once collide: done once here, then switched off
            prepared = subprocess.run([sys.executable, "-m", "fileflow.server.serverdb"], env=server_env,
                                      capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
            (self.home / "logs" / "serverdb.log").write_text(prepared.stdout + prepared.stderr)
            if prepared.returncode != 0:
                raise RuntimeError(f"preparing the Prefect database failed: {prepared.stderr[-2000:]}")
            server_env["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"] = "false"
            server_env["PREFECT_SERVER_REGISTER_BLOCKS_ON_START"] = "false"
        # with several API processes Prefect runs none of the loop services in them: they get a
        # process of their own (started once; an API restart leaves it running)
        # PREFECT_SERVER_LOGGING_LEVEL=INFO adds the access log, a line per API call (bench/server_calls.py)
        log_level = os.environ.get("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
        self._start("server", [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(self.port), "--log-level", log_level,
                               "--workers", str(self.server_workers)], server_env)
        self._wait_http(f"{self.api_url}/health", 120, "the Prefect server")
        services = self.processes.get("server-services")
        if self.server_workers > 1 and (services is None or not _group_alive(services)):
            self._start("server-services", [sys.executable, "-m", "prefect", "server", "services", "start"],
                        server_env)

    def restart_server(self, grace_s: float = 15.0) -> None:
        """Stop the recorded Prefect server and start it again on the same port and database.

        What an operator does for an upgrade or after a fault; the workers, mediators and
        clients ride it out (Prefect's client retries, ``PREFECT_CLIENT_MAX_RETRIES`` below).
        """
        for what, url, option in (("database", self.database_url, "--database"), ("Redis", self.redis_url, "--redis")):
            if url and MASK in url:
                raise RuntimeError(f"the stack's {what} ({url}) needs its password: pass {option}")
        pid = self.processes.get("server")
        if pid is not None:
            _signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while _group_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _group_alive(pid):
                _signal_group(pid, signal.SIGKILL)
            _reap(pid)
        self._start_server(self.env())

    def up(self, progress=print) -> None:
        if self.state_file.exists():
            raise RuntimeError(f"a stack is already recorded in {self.state_file}; run `fileflow down` first")
        problems = self.problems()
        if problems:
            raise RuntimeError("; ".join(problems))
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.home / SUPERVISED_DIR, ignore_errors=True)  # a previous stack's restarts
        env = self.env()
        python = sys.executable
        if self.redis_url:
            self._check_redis()
        try:
            workers = f" ({self.server_workers} API processes)" if self.server_workers > 1 else ""
            progress(f"starting the Prefect server on port {self.port}{workers}")
            self._start_server(env)
            progress("creating work pools and deployments")
            setup = subprocess.run([python, "-m", "deployments.setup"], env=env, capture_output=True, text=True,
                                   cwd=Path(__file__).resolve().parents[1])
            (self.home / "logs" / "setup.log").write_text(setup.stdout + setup.stderr)
            if setup.returncode != 0:
                raise RuntimeError(f"deployments.setup failed: {setup.stderr[-2000:]}")
            progress("starting the warm LibreOffice")
            uno_port = free_port()
            self._start("unoserver", [python, "-m", "fileflow.engine.office", "--port", str(uno_port)], env)
            env["FILEFLOW_UNOSERVER_PORT"] = str(uno_port)
            progress(f"starting workers: mediator + {self.workers_per_pool} per converter pool")
            worker = [python, "-m", "prefect", "worker", "start", "--type", "process"]
            warm = [python, "-m", "fileflow.server.worker"]
            if self.mediator_type == "warm":  # every file's flow runs in this one warm process
                self._start("worker-mediator", [*warm, "--pool", MEDIATOR_POOL, "--limit", str(self.mediator_limit),
                                                "--grace", str(MEDIATOR_GRACE_S)], env, PREDECESSOR_ENV)
            else:  # Prefect's process worker, naming itself in its claims: a fresh engine process per file
                self._start("worker-mediator", [python, "-m", "fileflow.server.worker.process", "--pool", MEDIATOR_POOL,
                                                "--limit", str(self.mediator_limit), "--grace", str(MEDIATOR_GRACE_S)],
                            env, PREDECESSOR_ENV)
            pools = [pool_name(converter) for converter in converters.BUILTINS]
            for i in range(self.workers_per_pool):
                if self.worker_type == "warm":
                    pool_args = [arg for pool in pools for arg in ("--pool", pool)]
                    self._start(f"worker-warm-{i}", [*warm, *pool_args], env, PREDECESSOR_ENV)
                else:
                    for pool in pools:
                        self._start(f"worker-{pool}-{i}", [*worker, "--pool", pool], env)
            progress(f"starting the exporter on port {self.exporter_port}")
            self._start("exporter", [python, "-m", "fileflow.server.exporter", "--host", "127.0.0.1", "--port",
                                     str(self.exporter_port), "--api-url", self.api_url], env)
            self._wait_http(f"http://127.0.0.1:{self.exporter_port}/healthz", 60, "the exporter")
            self.api_port = self.api_port or free_port()
            progress(f"starting the upload API on port {self.api_port}")
            self._start("api", [python, "-m", "fileflow.server.api", "--host", "127.0.0.1", "--port",
                                str(self.api_port)], self._api_env(env))
            self._wait_http(f"http://127.0.0.1:{self.api_port}/healthz", 60, "the upload API")
            # resumes crashed router runs whose Crashed event the automation missed (fileflow/server/resumer.py)
            self._start("resumer", [python, "-m", "fileflow.server.resumer"], env)
            # POSTs the callback outbox (the webhook, per-upload callbacks), signed and retried (docs/callbacks.md)
            progress("starting the callback deliverer")
            self._start("deliverer", [python, "-m", "fileflow.server.deliverer"], env)
            if env.get("FILEFLOW_STORAGE_KIND") == "s3" and env.get("FILEFLOW_S3_EVENTS_QUEUE_URL"):
                progress("starting the S3 notification consumer")
                self._start("s3-events", [python, "-m", "fileflow.server.s3_events"], env)
        except BaseException:
            self.down()
            raise

    def down(self, grace_s: float = 15.0) -> list[str]:
        """Stop every recorded process group; the names of those that had to be killed."""
        if self.state_file.exists():
            self.processes = json.loads(self.state_file.read_text())["processes"]
        for pid in self.processes.values():
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        killed = []
        for name, pid in self.processes.items():
            while _group_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _group_alive(pid):
                _signal_group(pid, signal.SIGKILL)
                killed.append(name)
        for pid in self.processes.values():
            _reap(pid)
        # Prefect's process worker starts each flow run in a session of its own, outside the
        # worker's group: a run still going when the worker stopped is found by its PREFECT_HOME
        killed += _stop_processes(members(self.home), grace_s=min(grace_s, 5.0))
        self.processes = {}
        self.state_file.unlink(missing_ok=True)
        shutil.rmtree(self.home / SUPERVISED_DIR, ignore_errors=True)
        return killed

    @classmethod
    def recorded(cls, home: Path, database_url: str | None = None, redis_url: str | None = None) -> "Stack":
        """The stack recorded under ``home``. The record holds the database and Redis URLs without
        their password: ``database_url`` and ``redis_url`` give them back (to restart its server)."""
        state = stack_state(home)
        storage = Path(state["storage_path"]) if state.get("storage_path") else None
        return cls(home=home, port=state["port"], exporter_port=state["exporter_port"],
                   api_port=state.get("api_port", 0),
                   storage_path=storage, database_url=database_url or state.get("database"),
                   redis_url=redis_url or state.get("redis"), server_workers=state.get("server_workers", 1),
                   processes=state["processes"])


MASK = "***"


def _without_password(url: str | None) -> str | None:
    """A database or Redis URL as recorded in stack.json: never with its password."""
    if not url:
        return url
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", f":{MASK}@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def members(home: Path) -> list[int]:
    """Every live process started by the stack under ``home``: all of them, flow-run processes
    included, inherit its ``PREFECT_HOME``."""
    needle = f"PREFECT_HOME={home / 'prefect-home'}".encode()
    mine = _ancestors()  # never this process or the shell that runs it, whatever their environment
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0") and not _zombie(int(entry.name)):
                found.append(int(entry.name))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return found


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            break
    return pids


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def _stop_processes(pids: list[int], grace_s: float) -> list[str]:
    """SIGTERM, then SIGKILL after ``grace_s``; the names of those that had to be killed."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while any(not _zombie(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    killed = []
    for pid in pids:
        if not _zombie(pid):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(f"process {pid}")
            except ProcessLookupError:
                pass
        _reap(pid)
    return killed


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # zombies of ours count as gone
    try:
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().split()[2] == "Z":
                _reap(pid)
                return _group_has_members(pid)
    except FileNotFoundError:
        return _group_has_members(pid)
    return True


def live_processes() -> Iterator[tuple[int, int, int]]:
    """``(pid, parent pid, process group)`` of every process that is not a zombie, from /proc."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if fields[0] != "Z":
                yield int(entry.name), int(fields[1]), int(fields[2])


def _group_has_members(pgid: int) -> bool:
    return any(group == pgid for _, _, group in live_processes())


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
