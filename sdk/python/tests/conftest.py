"""Fixtures: one real node agent for the whole session, started from the workspace's build.

Binaries: ``MSB_AGENT_BIN`` (default ``<repo>/target/release/microsandbox-agent``, else the debug
build) and the static guest agent ``MSB_GUEST_AGENT`` (default
``<repo>/target/x86_64-unknown-linux-gnu/release/microsandbox-guest``). Images come from the local
registry (``make setup``) as docker.io's mirror (``MSB_TEST_MIRROR``, default
``docker.io=127.0.0.1:5000``). The agent gets its own state directory; the image store is shared
with the Rust integration tests (``<repo>/target/test-state/images``) so images are pulled once.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from microsandbox import Sandbox, _agent, _native

REPO = Path(__file__).resolve().parents[3]
MIRROR = os.environ.get("MSB_TEST_MIRROR", "docker.io=127.0.0.1:5000")


def agent_binary() -> Path:
    env = os.environ.get("MSB_AGENT_BIN")
    if env:
        return Path(env)
    builds = [REPO / "target" / p / "microsandbox-agent" for p in ("release", "debug")]
    builds = [p for p in builds if p.is_file()]
    if not builds:
        pytest.exit("no microsandbox-agent binary: run `make agent` or set MSB_AGENT_BIN", 2)
    return max(builds, key=lambda p: p.stat().st_mtime)  # the freshest build


def guest_binary() -> Path:
    p = Path(
        os.environ.get("MSB_GUEST_AGENT")
        or REPO / "target/x86_64-unknown-linux-gnu/release/microsandbox-guest"
    )
    if not p.is_file():
        pytest.exit(f"static guest agent {p} missing: run `make guest` or set MSB_GUEST_AGENT", 2)
    return p


@dataclass
class AgentProcess:
    state: Path
    proc: subprocess.Popen[bytes] | None
    binary: Path
    guest: Path

    @property
    def socket(self) -> Path:
        return self.state / "agent.sock"

    def log(self) -> str:
        try:
            return (self.state / "agent.log").read_text(errors="replace")
        except OSError:
            return ""


def new_state_dir(base: Path) -> Path:
    """A fresh state directory sharing the workspace's image store."""
    state = base
    state.mkdir(parents=True, exist_ok=True)
    shared = REPO / "target" / "test-state" / "images"
    try:
        shared.mkdir(parents=True, exist_ok=True)
        os.symlink(shared, state / "images")
    except OSError:
        pass
    return state


def host_files(state: Path) -> Path:
    """The directory copy patches may read from (the agent's ``--host-root``)."""
    d = state / "host-files"
    d.mkdir(parents=True, exist_ok=True)
    return d


def closed_netns() -> str:
    """A network namespace with only loopback (made once per test process, removed at exit)."""
    name = f"msb-sdk-{os.getpid()}"
    if not Path("/run/netns", name).exists():
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        atexit.register(subprocess.run, ["ip", "netns", "del", name], check=False)
    return name


def spawn_agent(
    state: Path, binary: Path, guest: Path, extra: tuple[str, ...] = ()
) -> AgentProcess:
    """An agent on ``state``; ``extra`` arguments go to ``serve``."""
    log = open(state / "agent.log", "ab")
    proc = subprocess.Popen(
        [
            str(binary),
            "serve",
            "--state-dir",
            str(state),
            "--mirror",
            MIRROR,
            "--guest-agent",
            str(guest),
            "--lease-grace-secs",
            "3",
            "--host-root",
            str(host_files(state)),
            # Sandboxes with a network policy get their uplink in a namespace with no route
            # anywhere: tests never put a packet on the machine's network.
            "--uplink-netns",
            closed_netns(),
            "--dns-upstream",
            "127.0.0.1:53",
            *extra,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
        env={**os.environ, "MSB_LOG": os.environ.get("MSB_LOG", "info")},
    )
    log.close()
    agent = AgentProcess(state, proc, binary, guest)
    deadline = time.monotonic() + 30
    while not _agent.healthy(str(agent.socket), timeout=1.0):
        if proc.poll() is not None:
            pytest.exit(f"agent exited with {proc.returncode}:\n{agent.log()}", 2)
        if time.monotonic() > deadline:
            pytest.exit(f"agent did not start:\n{agent.log()}", 2)
        time.sleep(0.02)
    return agent


def cleanup_agent(agent: AgentProcess) -> None:
    """Removes the agent's sandboxes, stops it, and clears what the runtime left behind."""

    async def remove_all() -> None:
        try:
            c = _native.Client.from_state_dir(agent.state)
            for sb in await c.list():
                try:
                    await c.remove(sb["name"])
                except Exception:
                    pass
        except Exception:
            pass

    if agent.proc is not None and agent.proc.poll() is None:
        asyncio.run(remove_all())
        agent.proc.terminate()
        try:
            agent.proc.wait(10)
        except subprocess.TimeoutExpired:
            agent.proc.kill()
            agent.proc.wait()
    crun_root = agent.state / "crun"
    if crun_root.exists() and shutil.which("crun"):
        out = subprocess.run(
            ["crun", "--root", str(crun_root), "list", "-q"], capture_output=True, text=True
        )
        for cid in out.stdout.split():
            subprocess.run(["crun", "--root", str(crun_root), "delete", "--force", cid],
                           capture_output=True)
    prefix = str(agent.state)
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split(" ")[4] for line in f]
    for m in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)
    if not os.environ.get("MSB_KEEP_STATE"):
        try:
            (agent.state / "images").unlink()
        except OSError:
            pass
        shutil.rmtree(agent.state, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def agent() -> Iterator[AgentProcess]:
    """The session's agent; the SDK finds it through MSB_STATE_DIR."""
    binary, guest = agent_binary(), guest_binary()
    # Short: sandbox sockets live at <state>/sandboxes/<name>/run/agent.sock (sun_path <= 108).
    state = new_state_dir(Path(tempfile.mkdtemp(prefix="msbpy-", dir="/tmp")))
    a = spawn_agent(state, binary, guest)
    saved = {k: os.environ.get(k) for k in
             ("MSB_STATE_DIR", "MSB_AGENT_SOCKET", "MSB_AGENT_TOKEN", "MSB_AGENT_BIN",
              "MSB_GUEST_AGENT", "MSB_MIRRORS")}
    os.environ.update(
        MSB_STATE_DIR=str(state),
        MSB_AGENT_BIN=str(binary),
        MSB_GUEST_AGENT=str(guest),
        MSB_MIRRORS=MIRROR,
    )
    os.environ.pop("MSB_AGENT_SOCKET", None)
    os.environ.pop("MSB_AGENT_TOKEN", None)
    _agent.reset_client()
    try:
        yield a
    finally:
        if sys.exc_info()[0] is None and os.environ.get("MSB_SHOW_AGENT_LOG"):
            print(a.log())
        cleanup_agent(a)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _agent.reset_client()


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A sandbox name unique to the test."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:24].strip("-")
    return f"t-{slug}-{secrets.token_hex(3)}"


@pytest.fixture
async def busybox(name: str) -> AsyncIterator[Sandbox]:
    """A running busybox sandbox, removed after the test."""
    async with await Sandbox.create(name, image="busybox", memory=128) as sb:
        yield sb


@pytest.fixture(scope="session")
async def python_sb() -> AsyncIterator[Sandbox]:
    """One python sandbox shared by the tests that only run commands in it."""
    async with await Sandbox.create(f"t-shared-py-{secrets.token_hex(3)}", image="python") as sb:
        yield sb
