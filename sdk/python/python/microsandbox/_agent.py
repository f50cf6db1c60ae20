"""Finding the local node agent, and starting one when none runs.

Where the agent is:

* ``MSB_AGENT_SOCKET``: an explicit endpoint (a unix socket path, ``unix:PATH`` or
  ``HOST:PORT``), with the token from ``MSB_AGENT_TOKEN`` or the ``agent.token`` beside the
  socket. Such an agent is never started by the SDK.
* otherwise the state directory ``MSB_STATE_DIR``, by default the agent's own default
  (``/var/lib/microsandbox`` as root, else ``$XDG_STATE_HOME/microsandbox`` or
  ``~/.local/state/microsandbox``): socket ``<state>/agent.sock``, token ``<state>/agent.token``.
  When nothing answers there, the SDK starts ``microsandbox-agent serve --state-dir <state>``
  detached (its own session, logs in ``<state>/agent.log``), so later processes reuse it.

The binary is ``MSB_AGENT_BIN``, else the one bundled in the wheel (``microsandbox/bin/``), else
``microsandbox-agent`` on ``PATH``. The agent itself reads ``MSB_MIRRORS``, ``MSB_GUEST_AGENT``
and its other ``MSB_*`` settings from the environment, which it inherits.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import _native
from .errors import AgentNotInstalledError, AgentUnreachableError

ENV_SOCKET = "MSB_AGENT_SOCKET"
ENV_TOKEN = "MSB_AGENT_TOKEN"
ENV_STATE_DIR = "MSB_STATE_DIR"
ENV_AGENT_BIN = "MSB_AGENT_BIN"
ENV_START_TIMEOUT = "MSB_AGENT_START_TIMEOUT"

AGENT_BINARY = "microsandbox-agent"
BUNDLED_BIN_DIR = Path(__file__).resolve().parent / "bin"
DEFAULT_START_TIMEOUT = 30.0


def default_state_dir() -> Path:
    """The agent's default state directory for the current user."""
    if os.geteuid() == 0:
        return Path("/var/lib/microsandbox")
    base = os.environ.get("XDG_STATE_HOME")
    if base:
        return Path(base) / "microsandbox"
    home = os.environ.get("HOME")
    if home:
        return Path(home) / ".local" / "state" / "microsandbox"
    return Path("/tmp") / "microsandbox"


def state_dir() -> Path:
    """``MSB_STATE_DIR`` or :func:`default_state_dir`."""
    env = os.environ.get(ENV_STATE_DIR)
    return Path(env) if env else default_state_dir()


def find_agent_binary() -> str | None:
    """Path of the ``microsandbox-agent`` the SDK would start, or None."""
    env = os.environ.get(ENV_AGENT_BIN)
    if env:
        return env if os.access(env, os.X_OK) else None
    bundled = BUNDLED_BIN_DIR / AGENT_BINARY
    if os.access(bundled, os.X_OK):
        return str(bundled)
    return shutil.which(AGENT_BINARY)


@dataclass(frozen=True)
class AgentLocation:
    """Where the agent listens and how to authenticate."""

    endpoint: str
    """A unix socket path or ``HOST:PORT``."""
    token_file: Path | None
    token: str | None
    state_dir: Path | None
    """The state directory of a local agent the SDK may start; None for explicit endpoints."""

    def read_token(self) -> str | None:
        if self.token is not None:
            return self.token
        if self.token_file is None:
            return None
        try:
            return self.token_file.read_text().strip()
        except FileNotFoundError:
            return None


def locate() -> AgentLocation:
    """Where the agent should be, from the environment."""
    explicit = os.environ.get(ENV_SOCKET)
    token = os.environ.get(ENV_TOKEN) or None
    if explicit:
        path = explicit.removeprefix("unix://").removeprefix("unix:")
        if path.startswith(("/", "./", "../")):
            return AgentLocation(path, Path(path).parent / "agent.token", token, None)
        return AgentLocation(explicit, None, token, None)
    sd = state_dir()
    return AgentLocation(str(sd / "agent.sock"), sd / "agent.token", token, sd)


def _is_unix(endpoint: str) -> bool:
    return endpoint.startswith(("/", "./", "../"))


def healthy(endpoint: str, timeout: float = 2.0) -> bool:
    """Whether an agent answers ``GET /healthz`` at ``endpoint`` (blocking, short timeout)."""
    try:
        if _is_unix(endpoint):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(endpoint)
        else:
            addr = endpoint.removeprefix("http://").removeprefix("tcp://").rstrip("/")
            host, _, port = addr.rpartition(":")
            s = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        with s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n" not in data and len(data) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        status = data.split(b"\r\n", 1)[0].split()
        return len(status) >= 2 and status[1] == b"200"
    except (OSError, ValueError):
        return False


def _host_access() -> list[str]:
    """How a started agent lets binds and copy patches read the host: ``MSB_HOST_ROOTS`` when set
    (the agent reads it), else ``--local``: this user's agent on this user's machine may give a
    sandbox any path the user can read (never the agent's own state, /proc, /sys or /dev)."""
    if os.environ.get("MSB_HOST_ROOTS"):
        return []
    return ["--local"]


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


@dataclass
class _Started:
    pid: int | None = None
    """Pid of the agent this process started, if it started one."""


_started = _Started()


def started_agent_pid() -> int | None:
    """Pid of the agent this process started (None if it reused a running one)."""
    return _started.pid


def start_agent(sd: Path, timeout: float | None = None) -> int | None:
    """Starts a detached agent on state directory ``sd`` unless one answers there already;
    waits until it serves. Returns the new agent's pid (None if one was running).

    Serialised across processes with a lock file, so concurrent first uses start one agent.
    """
    if timeout is None:
        timeout = float(os.environ.get(ENV_START_TIMEOUT, DEFAULT_START_TIMEOUT))
    sock = str(sd / "agent.sock")
    if healthy(sock):
        return None
    binary = find_agent_binary()
    if binary is None:
        where = os.environ.get(ENV_AGENT_BIN)
        detail = (
            f"{ENV_AGENT_BIN}={where} is not an executable file"
            if where
            else f"no {AGENT_BINARY} bundled in {BUNDLED_BIN_DIR} nor on PATH"
        )
        raise AgentNotInstalledError(
            f"no node agent answers at {sock} and none can be started: {detail}",
            hint=f"install microsandbox-agent, set {ENV_AGENT_BIN}, or start an agent and set "
            f"{ENV_STATE_DIR} / {ENV_SOCKET}",
        )
    try:
        sd.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise AgentUnreachableError(f"cannot create the agent state directory {sd}: {e}") from e
    with open(sd / "agent.start.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if healthy(sock):
            return None
        log_path = sd / "agent.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [binary, "serve", "--state-dir", str(sd), *_host_access()],
                # An empty MSB_HOST_ROOTS would read as a --host-root beside --local.
                env={k: v for k, v in os.environ.items() if k != "MSB_HOST_ROOTS" or v},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if healthy(sock, timeout=1.0) and (sd / "agent.token").exists():
                _started.pid = proc.pid
                return proc.pid
            code = proc.poll()
            if code is not None:
                raise AgentUnreachableError(
                    f"the node agent ({binary}) exited with status {code} while starting; "
                    f"its log {log_path} ends with:\n{_log_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise AgentUnreachableError(
                    f"the node agent ({binary}, pid {proc.pid}) did not answer on {sock} within "
                    f"{timeout:.0f}s; its log {log_path} ends with:\n{_log_tail(log_path)}"
                )
            time.sleep(0.05)


_lock = threading.Lock()
_client: _native.Client | None = None
_client_key: tuple[str, str | None] | None = None


def _connect_sync() -> _native.Client:
    global _client, _client_key
    with _lock:
        loc = locate()
        if _client is not None and _client_key == (loc.endpoint, loc.read_token()):
            return _client
        if not healthy(loc.endpoint):
            if loc.state_dir is None:
                raise AgentUnreachableError(
                    f"no node agent answers at {loc.endpoint} ({ENV_SOCKET})",
                    hint="start it, or unset MSB_AGENT_SOCKET to let the SDK start a local agent",
                )
            start_agent(loc.state_dir)
        token = loc.read_token()
        client = _native.Client(loc.endpoint, token)
        _client, _client_key = client, (loc.endpoint, token)
        return client


async def get_client() -> _native.Client:
    """The shared client of the local agent, starting the agent if needed."""
    client, key = _client, _client_key
    if client is not None and key is not None and key[0] == locate().endpoint:
        return client
    return await asyncio.to_thread(_connect_sync)


def reset_client() -> None:
    """Forgets the shared client (the next call locates the agent again)."""
    global _client, _client_key
    with _lock:
        _client, _client_key = None, None
