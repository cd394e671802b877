"""Broker deployments beyond one server, started for real on 127.0.0.1 free ports.

- ``RedisCluster``: six ``redis-server --cluster-enabled yes`` (three primaries, a replica
  each), joined with ``redis-cli --cluster create``.
- ``RedisSentinel``: a primary, a replica and three sentinels (quorum 2).
- ``NatsCluster``: three ``nats-server`` with JetStream, joined by routes.

Each waits for what it needs with a deadline (a log line, or a condition polled), keeps every
process's log for failure reports, and stops its processes by PID. The binaries missing is a
loud skip, and a failure under ``CI=true``. The classes are synchronous so that session fixtures can
hold them whatever the tests' event loops are.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
DEADLINE = 30.0


def require_binaries(*paths: str) -> None:
    """Skip, loudly, when a server binary is missing; under CI=true fail instead."""
    missing = [path for path in paths if not os.access(path, os.X_OK)]
    if not missing:
        return
    names = ", ".join(f"{Path(path).name.upper()} ({path})" for path in missing)
    message = f"NOT INSTALLED: {names}: broker deployment tests did not run"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (held open together while they are picked)."""
    probes = []
    try:
        for _ in range(count):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            probes.append(probe)
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def wait_until(condition: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll ``condition`` (a query of a server's state) until it is true, with a deadline."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return value


class Service:
    """One server process; its output is drained in a thread and kept for reports."""

    def __init__(self, name: str, argv: list[str], ready: str) -> None:
        self.name = name
        self.argv = argv
        self.ready = ready
        self.log: deque[str] = deque(maxlen=400)
        self.process: subprocess.Popen[str] | None = None
        self._logged = threading.Condition()
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self.log.clear()
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._drain, args=(self.process,), daemon=True)
        self._reader.start()

    def _drain(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for line in process.stdout:
                with self._logged:
                    self.log.append(line)
                    self._logged.notify_all()
        with self._logged:
            self._logged.notify_all()

    def wait_for_log(self, text: str, timeout: float = DEADLINE) -> None:
        def seen() -> bool:
            return any(text in line for line in self.log) or not self.alive

        with self._logged:
            self._logged.wait_for(seen, timeout)
        if not any(text in line for line in self.log):
            raise AssertionError(f"{self.name}: {text!r} not logged:\n{''.join(self.log)}")

    def wait_ready(self) -> None:
        self.wait_for_log(self.ready)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL by PID: a crashed machine, nothing flushed, nothing handed over."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, how: signal.Signals) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            os.kill(process.pid, how)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=10)
            self._reader = None
        if process is not None and process.stdout is not None:
            process.stdout.close()


class Deployment:
    """Services started together and always stopped together; the directory is removed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.services: list[Service] = []

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        for service in self.services:
            service.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def logs(self) -> str:
        return "\n".join(f"--- {s.name}\n{''.join(list(s.log)[-30:])}" for s in self.services)


def redis_call(port: int, *command: str) -> str:
    """One command through ``redis-cli`` (its reply as text, "" if the server is gone)."""
    done = subprocess.run(
        [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *command],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return done.stdout if done.returncode == 0 else ""


def _redis_argv(port: int, directory: Path, *extra: str) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    return [
        REDIS_SERVER,
        *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
        *("--dir", str(directory), "--logfile", ""),
        # A replica's first sync starts at once, not after the default 5 s wait for others.
        *("--repl-diskless-sync-delay", "0"),
        *extra,
    ]


class RedisCluster(Deployment):
    """Three primaries with a replica each. A node that misses the others for
    ``NODE_TIMEOUT_MS`` is failed over; shards that are up keep serving meanwhile."""

    NODE_TIMEOUT_MS = 1000

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        ports = free_ports(12)
        self.ports, bus_ports = ports[:6], ports[6:]
        for n, (port, bus) in enumerate(zip(self.ports, bus_ports, strict=True)):
            argv = _redis_argv(
                port,
                directory / f"node-{n}",
                *("--cluster-enabled", "yes", "--cluster-port", str(bus)),
                *("--cluster-config-file", "nodes.conf"),
                *("--cluster-node-timeout", str(self.NODE_TIMEOUT_MS)),
                *("--cluster-require-full-coverage", "no"),
            )
            self.services.append(Service(f"redis-{port}", argv, "Ready to accept connections"))

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:3])

    def start(self) -> None:
        for service in self.services:
            service.start()
        for service in self.services:
            service.wait_ready()
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        created = subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas", "1"],
            input="yes\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            raise AssertionError(f"redis-cli --cluster create failed:\n{created.stdout}")
        for port in self.ports:
            wait_until(lambda p=port: self.healthy(p), f"cluster_state:ok on {port}")
        wait_until(lambda: len(self.primaries()) == 3, "three primaries with slots")
        wait_until(
            lambda: sum(_replicating(port) for port in self.ports) == 3, "three replicas in sync"
        )

    def healthy(self, port: int) -> bool:
        info = redis_call(port, "CLUSTER", "INFO")
        return "cluster_state:ok" in info and "cluster_slots_ok:16384" in info

    def primaries(self) -> dict[int, str]:
        """Port -> node id of every live primary that holds slots, as the live nodes see it."""
        found: dict[int, str] = {}
        for port in self.live_ports():
            for line in redis_call(port, "CLUSTER", "NODES").splitlines():
                fields = line.split()
                if len(fields) >= 9 and "master" in fields[2] and "fail" not in fields[2]:
                    found[int(fields[1].split(":")[1].split("@")[0])] = fields[0]
            return found
        return found

    def live_ports(self) -> list[int]:
        return [port for port, s in zip(self.ports, self.services, strict=True) if s.alive]

    def primary_of(self, key: str) -> int | None:
        """The port of the live primary that serves ``key`` now, as a live node sees it."""
        for port in self.live_ports():
            slot = int(redis_call(port, "CLUSTER", "KEYSLOT", key).strip() or -1)
            for line in redis_call(port, "CLUSTER", "NODES").splitlines():
                fields = line.split()
                if "master" not in fields[2] or "fail" in fields[2]:
                    continue
                for span in fields[8:]:
                    low, _, high = span.partition("-")
                    if low.isdigit() and int(low) <= slot <= int(high or low):
                        return int(fields[1].split(":")[1].split("@")[0])
            return None
        return None

    # Failover: what the failover tests do to every deployment.

    def kill_primary(self, channel: str, prefix: str) -> Service:
        """SIGKILL the primary of the shard that holds ``channel``."""
        port = self.primary_of("{" + channel + "}")
        assert port is not None, self.logs()
        service = self.service_on(port)
        service.kill()
        return service

    def failed_over(self, killed: Service, channel: str, prefix: str) -> bool:
        port = self.primary_of("{" + channel + "}")
        return port is not None and self.service_on(port) is not killed

    def rejoin(self, killed: Service) -> None:
        """Start the killed node again: it comes back as a replica of the promoted one."""
        killed.start()
        killed.wait_ready()
        port = self.ports[self.services.index(killed)]
        wait_until(lambda: _replicating(port), f"{port} to replicate again")
        for live in self.ports:
            wait_until(lambda p=live: self.healthy(p), f"cluster_state:ok on {live}")
        wait_until(self.whole, "every primary to have its replica online")

    def whole(self) -> bool:
        """Every primary has an online replica (a WAIT for one would be answered)."""
        primaries = self.primaries()
        return len(primaries) == 3 and all(_has_online_replica(port) for port in primaries)

    def service_on(self, port: int) -> Service:
        return self.services[self.ports.index(port)]


class RedisSentinel(Deployment):
    """A primary, a replica and three sentinels; the primary is declared down after
    ``DOWN_AFTER_MS`` and two sentinels agree on a failover."""

    MASTER = "tidings"
    DOWN_AFTER_MS = 1000

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        ports = free_ports(5)
        self.redis_ports, self.sentinel_ports = ports[:2], ports[2:]
        primary, replica = self.redis_ports
        self.services.append(
            Service(f"redis-{primary}", _redis_argv(primary, directory / "primary"), "Ready to")
        )
        replica_argv = _redis_argv(
            replica, directory / "replica", "--replicaof", "127.0.0.1", str(primary)
        )
        self.services.append(Service(f"redis-{replica}", replica_argv, "Ready to"))
        for port in self.sentinel_ports:
            config = directory / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {self.MASTER} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {self.MASTER} {self.DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {self.MASTER} 2000\n"
                f"sentinel parallel-syncs {self.MASTER} 1\n"
            )
            argv = [REDIS_SERVER, str(config), "--sentinel"]
            self.services.append(Service(f"sentinel-{port}", argv, "+monitor master"))

    @property
    def url(self) -> str:
        sentinels = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{sentinels}/{self.MASTER}"

    def start(self) -> None:
        for service in self.services:
            service.start()
        for service in self.services:
            service.wait_ready()
        wait_until(lambda: _replicating(self.redis_ports[1]), "the replica in sync")
        for port in self.sentinel_ports:
            wait_until(lambda p=port: self._knows_everyone(p), f"sentinel {port} to see all")

    def _knows_everyone(self, port: int) -> bool:
        replicas = redis_call(port, "SENTINEL", "REPLICAS", self.MASTER)
        sentinels = redis_call(port, "SENTINEL", "SENTINELS", self.MASTER)
        others = [p for p in self.sentinel_ports if p != port]
        return str(self.redis_ports[1]) in replicas and all(str(p) in sentinels for p in others)

    def primary_port(self) -> int:
        """The primary's port as the sentinels name it now."""
        for port in self.sentinel_ports:
            if reply := redis_call(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.MASTER):
                return int(reply.split()[1])
        raise AssertionError("no sentinel answered")

    def service_on(self, port: int) -> Service:
        return self.services[self.redis_ports.index(port)]

    def kill_primary(self, channel: str, prefix: str) -> Service:
        service = self.service_on(self.primary_port())
        service.kill()
        return service

    def failed_over(self, killed: Service, channel: str, prefix: str) -> bool:
        return self.service_on(self.primary_port()) is not killed

    def rejoin(self, killed: Service) -> None:
        """Start the old primary again as a replica of the one the sentinels name (as an
        orchestrator would; the sentinels would convert it too, but only after a while)."""
        port = self.redis_ports[self.services.index(killed)]
        primary = self.primary_port()
        base = _redis_argv(port, self.directory / f"rejoined-{port}")
        killed.argv = [*base, "--replicaof", "127.0.0.1", str(primary)]
        killed.start()
        killed.wait_ready()
        wait_until(lambda: _replicating(port), f"{port} to replicate the new primary")
        wait_until(self.whole, "the primary to have its replica online")

    def whole(self) -> bool:
        """The primary has an online replica (a WAIT for one would be answered)."""
        return _has_online_replica(self.primary_port())


class NatsCluster(Deployment):
    """Three JetStream servers joined by routes; streams are replicated on all three."""

    NAME = "tidings"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        ports = free_ports(9)
        self.ports, routes, self.monitors = ports[:3], ports[3:6], ports[6:]
        route_urls = ",".join(f"nats://127.0.0.1:{port}" for port in routes)
        for n, (port, route) in enumerate(zip(self.ports, routes, strict=True)):
            argv = [
                NATS_SERVER,
                *("-a", "127.0.0.1", "-p", str(port), "-n", f"n{n}"),
                *("-m", str(self.monitors[n])),
                *("-js", "-sd", str(directory / f"n{n}")),
                *("--cluster_name", self.NAME, "--cluster", f"nats://127.0.0.1:{route}"),
                *("--routes", route_urls),
            ]
            self.services.append(Service(f"nats-n{n}", argv, "Server is ready"))

    @property
    def url(self) -> str:
        return "nats://" + ",".join(f"127.0.0.1:{port}" for port in self.ports) + "?replicas=3"

    def start(self) -> None:
        for service in self.services:
            service.start()
        for service in self.services:
            service.wait_ready()
        wait_until(self._has_meta_leader, "a JetStream meta leader")

    def _has_meta_leader(self) -> bool:
        return any("new metadata leader" in line for s in self.services for line in s.log)

    def service_named(self, name: str) -> Service:
        return self.services[int(name.removeprefix("n"))]

    def stream_leader(self, stream: str) -> str | None:
        """The server name (``n0``...) that leads ``stream`` now, as a live server says."""
        for service, monitor in zip(self.services, self.monitors, strict=True):
            if not service.alive:
                continue
            address = f"http://127.0.0.1:{monitor}/jsz?accounts=true&streams=true"
            try:
                with urllib.request.urlopen(address, timeout=5) as answer:
                    state = json.load(answer)
            except OSError:
                continue
            for account in state.get("account_details", []):
                for detail in account.get("stream_detail", []):
                    if detail["name"] == stream:
                        leader: str | None = detail.get("cluster", {}).get("leader")
                        return leader
        return None

    def whole(self) -> bool:
        return all(service.alive for service in self.services)

    def kill_primary(self, channel: str, prefix: str) -> Service:
        """SIGKILL the server that leads the channel's stream."""
        leader = self.stream_leader(_nats_stream(channel, prefix))
        assert leader is not None, self.logs()
        service = self.service_named(leader)
        service.kill()
        return service

    def failed_over(self, killed: Service, channel: str, prefix: str) -> bool:
        leader = self.stream_leader(_nats_stream(channel, prefix))
        return leader is not None and self.service_named(leader) is not killed

    def rejoin(self, killed: Service) -> None:
        """Start the killed server again on its store: it catches the stream up as a peer."""
        killed.start()
        killed.wait_ready()


def _nats_stream(channel: str, prefix: str) -> str:
    from tidings.brokers.nats_layout import Layout

    return Layout(prefix).stream_name(channel)


def _has_online_replica(port: int) -> bool:
    return "state=online" in redis_call(port, "INFO", "replication")


def _replicating(port: int) -> bool:
    info = redis_call(port, "INFO", "replication")
    return "role:slave" in info and "master_link_status:up" in info


@contextlib.contextmanager
def running(deployment: Deployment) -> Iterator[Any]:
    """Start ``deployment``; stop it, whatever happens, at the end."""
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()


def with_prefix(url: str) -> str:
    """``url`` with a key or stream prefix of its own, so tests sharing a deployment do not
    see each other's channels."""
    return f"{url}{'&' if '?' in url else '?'}prefix=t{uuid.uuid4().hex[:12]}"


# Session fixtures (tests/conftest.py loads this module as a plugin): each deployment starts
# when a test first asks for it and serves every test after. A test that kills a process
# brings it back before it ends, so the deployment stays whole for the next.


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    require_binaries(REDIS_SERVER, REDIS_CLI)
    with running(RedisCluster(tmp_path_factory.mktemp("redis-cluster"))) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinel]:
    require_binaries(REDIS_SERVER, REDIS_CLI)
    with running(RedisSentinel(tmp_path_factory.mktemp("redis-sentinel"))) as sentinel:
        yield sentinel


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    require_binaries(NATS_SERVER)
    with running(NatsCluster(tmp_path_factory.mktemp("nats-cluster"))) as cluster:
        yield cluster
