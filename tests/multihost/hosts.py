"""Separate hosts on one machine, for the multi-host test and the hosts benchmark.

A ``Host`` is a network namespace (``ip netns``) with only its own loopback, and a mount
namespace (``unshare --mount``) in which a private tmpfs covers ``HOST_DIR``: every host
sees the same path, each its own empty directory (media, model cache, var), and nothing
another host wrote there. Its processes get their own hostname (``unshare --uts``), so
Celery's ``%h`` names the host.

A host reaches the shared services (PostgreSQL, Redis, SeaweedFS, listening on 127.0.0.1
in the root namespace) only over TCP: a ``Forwarder`` listens on 127.0.0.1:<port> inside
the host's namespace (a socket created there with setns(2)) and relays each connection to
127.0.0.1:<port> of the root namespace, so every host runs with the same environment as a
real one (``DATABASE_URL=postgres://...@127.0.0.1:5432/...``). Nothing leaves loopback;
hosts cannot reach each other. The web host is reached the other way round: a forwarder
in the root namespace connects into its namespace.

Needs root (``ip netns``, ``unshare``, ``mount``); ``hosts_unavailable()`` says why not.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
# The script each host's process runs first: its own tmpfs over HOST_DIR, its hostname,
# the folders the app writes; then the commands (all in the same mount namespace).
_HOST_SETUP = (
    'set -e; mount -t tmpfs -o size=2g,mode=0755 imagerec-host "$HOST_DIR"; hostname "$HOST_NAME"; '
    'mkdir -p "$HOST_DIR/media" "$HOST_DIR/var" "$HOST_DIR/models" "$HOST_DIR/model-cache"; '
)


def hosts_unavailable() -> str:
    """Why hosts cannot be made here ('' when they can)."""
    if os.geteuid() != 0:
        return "network and mount namespaces need root"
    for tool in ("ip", "unshare", "nsenter", "mount", "hostname", "taskset"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    probe = f"imagerec-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return ""


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def socket_in(namespace: str | None) -> socket.socket:
    """A TCP socket created in network namespace ``namespace`` (None: this one). A socket
    stays in the namespace it was created in; only the calling thread switches, and back."""
    if namespace is None:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)


class Forwarder:
    """Relays TCP connections accepted on 127.0.0.1:``listen_port`` in ``listen_ns`` to
    127.0.0.1:``target_port`` in ``target_ns`` (None: the root namespace), byte for byte."""

    def __init__(self, *, listen_ns: str | None, listen_port: int, target_ns: str | None, target_port: int) -> None:
        self.target_ns = target_ns
        self.target_port = target_port
        self.listener = socket_in(listen_ns)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", listen_port))
        self.listener.listen(256)
        self.port = int(self.listener.getsockname()[1])
        self.connections = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True, name=f"forward-{listen_ns}-{listen_port}").start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket_in(self.target_ns)
                upstream.connect(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            self.connections += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(262144):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


class Host:
    """One machine: its network namespace, its private HOST_DIR, its processes."""

    def __init__(
        self, name: str, *, host_dir: Path, log_dir: Path, env: dict[str, str], services: Sequence[int]
    ) -> None:
        self.name = name
        self.namespace = f"imagerec-{os.getpid()}-{name}"
        self.host_dir = host_dir
        self.log_dir = log_dir
        self.env = {**env, "HOST_DIR": str(host_dir), "HOST_NAME": name}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = log_dir / f"{name}.log"
        subprocess.run(["ip", "netns", "add", self.namespace], check=True)
        subprocess.run(["ip", "netns", "exec", self.namespace, "ip", "link", "set", "lo", "up"], check=True)
        self.forwarders = [
            Forwarder(listen_ns=self.namespace, listen_port=port, target_ns=None, target_port=port) for port in services
        ]

    def start(self, commands: Sequence[Sequence[str]], *, setup: str = "", cpus: str = "") -> None:
        """Run ``commands`` (each in the background, all in this host's namespaces, after
        ``setup``, a shell snippet run in HOST_DIR's fresh tmpfs); ``cpus``: taskset list."""
        script = _HOST_SETUP + (f"{setup}; " if setup else "")
        for index, command in enumerate(commands):
            script += " ".join(_quote(part) for part in command) + (" & " if index < len(commands) - 1 else "")
        prefix = ["taskset", "-c", cpus] if cpus else []
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open by the process
        self.process = subprocess.Popen(
            [*prefix, "ip", "netns", "exec", self.namespace, "unshare", "--mount", "--uts", "--propagation", "private",
             "--", "sh", "-c", script + "; wait"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def run(self, command: Sequence[str]) -> str:
        """Run ``command`` inside this host (its network and mount namespaces), as root."""
        assert self.process is not None
        assert self.process.poll() is None, f"{self.name} is not running"
        pid = self.process.pid
        return subprocess.run(
            ["nsenter", "-t", str(pid), "-m", "-n", "-u", "--", *command], capture_output=True, text=True, check=True
        ).stdout

    def signal(self, signum: int) -> None:
        """Send ``signum`` to every process of this host (SIGSTOP freezes the host, SIGCONT resumes it)."""
        assert self.process is not None
        os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL every process of this host at once, as a machine losing power."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def terminate(self, timeout: float = 120) -> int:
        """SIGTERM every process of this host (a host leaving: Celery finishes its task)."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def destroy(self) -> None:
        self.kill()
        for forwarder in self.forwarders:
            forwarder.close()
        subprocess.run(["ip", "netns", "delete", self.namespace], capture_output=True)


def _quote(part: str) -> str:
    return "'" + part.replace("'", "'\"'\"'") + "'"


def wait_until(
    condition: Callable[[], object],
    *,
    timeout: float,
    what: str,
    every: float = 0.25,
    log: Callable[[], str] | None = None,
) -> None:
    """Poll ``condition`` until true; past ``timeout``, fail naming ``what`` (and the tail of ``log``)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tail = f"\n{log()[-4000:]}" if log else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")
        time.sleep(every)


@contextlib.contextmanager
def hosts_cleanup(hosts: list[Host]) -> Iterator[list[Host]]:
    try:
        yield hosts
    finally:
        for host in hosts:
            host.destroy()
