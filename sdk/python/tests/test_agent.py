"""Finding the agent: the state directory, an explicit socket, starting one when none runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import microsandbox
from microsandbox import (
    AgentNotInstalledError,
    AgentUnreachableError,
    Sandbox,
    UnauthorizedError,
    _agent,
)

from .conftest import AgentProcess, cleanup_agent, new_state_dir


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Environment changes undone after the test, with the SDK's cached client forgotten."""
    _agent.reset_client()
    yield monkeypatch
    monkeypatch.undo()
    _agent.reset_client()


def run_python(code: str, env: dict[str, str], cwd: Path | None = None) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=120, env=env, cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_starts_an_agent_when_none_runs_and_reuses_it(agent: AgentProcess) -> None:
    state = new_state_dir(Path(tempfile.mkdtemp(prefix="msbpy-auto-", dir="/tmp")))
    child_env = {**os.environ, "MSB_STATE_DIR": str(state)}
    code = """
        import asyncio, json
        from microsandbox import Sandbox, _agent
        async def main():
            async with await Sandbox.create(image="busybox") as sb:
                out = await sb.exec("echo", ["hi"])
            print(json.dumps({"out": out.stdout(), "pid": _agent.started_agent_pid()}))
        asyncio.run(main())
    """
    first = run_python(code, child_env)
    pid = first["pid"]
    assert isinstance(pid, int)
    try:
        assert first["out"] == "hi\n"
        assert (state / "agent.sock").exists() and (state / "agent.token").exists()
        assert "microsandbox-agent ready" in (state / "agent.log").read_text()
        # The agent outlived the process that started it (own session), and is reused.
        os.kill(pid, 0)
        assert os.getsid(pid) == pid
        second = run_python(code, child_env)
        assert second == {"out": "hi\n", "pid": None}
        # The seed's Volume.bind("./src") from another directory than the one the agent was
        # started from: the agent the SDK starts is the user's own (--local).
        project = Path(tempfile.mkdtemp(prefix="msbpy-project-", dir="/tmp"))
        (project / "src").mkdir()
        (project / "src" / "app.py").write_text("print(1)\n")
        bind = """
            import asyncio, json
            from microsandbox import Sandbox, Volume
            async def main():
                src = {"/app/src": Volume.bind("./src", readonly=True)}
                async with await Sandbox.create(image="busybox", volumes=src) as sb:
                    out = await sb.exec("cat", ["/app/src/app.py"])
                print(json.dumps({"out": out.stdout()}))
            asyncio.run(main())
        """
        assert run_python(bind, child_env, cwd=project) == {"out": "print(1)\n"}
    finally:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        cleanup_agent(AgentProcess(state, None, agent.binary, agent.guest))


async def test_explicit_socket(agent: AgentProcess, env: pytest.MonkeyPatch) -> None:
    env.setenv("MSB_AGENT_SOCKET", str(agent.socket))  # token read from the file beside it
    env.setenv("MSB_STATE_DIR", "/nonexistent")
    assert isinstance(await Sandbox.list(), list)
    env.setenv("MSB_AGENT_TOKEN", "wrong")
    _agent.reset_client()
    with pytest.raises(UnauthorizedError, match="token"):
        await Sandbox.list()


async def test_explicit_socket_is_never_started(env: pytest.MonkeyPatch) -> None:
    env.setenv("MSB_AGENT_SOCKET", "/tmp/msbpy-none/agent.sock")
    with pytest.raises(AgentUnreachableError, match="MSB_AGENT_SOCKET"):
        await Sandbox.list()
    assert not Path("/tmp/msbpy-none").exists()


async def test_no_agent_binary(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("MSB_STATE_DIR", str(tmp_path / "state"))
    env.setenv("MSB_AGENT_BIN", str(tmp_path / "missing-agent"))
    assert not microsandbox.is_installed()
    with pytest.raises(AgentNotInstalledError, match="MSB_AGENT_BIN") as e:
        await Sandbox.create("x", image="busybox")
    assert isinstance(e.value, AgentUnreachableError) and isinstance(e.value, ConnectionError)
    with pytest.raises(AgentNotInstalledError):
        microsandbox.install()


async def test_agent_that_fails_to_start(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "fake-agent"
    fake.write_text("#!/bin/sh\necho 'fake agent: cannot start' >&2\nexit 3\n")
    fake.chmod(0o755)
    env.setenv("MSB_STATE_DIR", str(tmp_path / "s"))
    env.setenv("MSB_AGENT_BIN", str(fake))
    with pytest.raises(AgentUnreachableError, match="(?s)status 3.*fake agent: cannot start"):
        await Sandbox.list()


def test_default_state_dir(env: pytest.MonkeyPatch) -> None:
    env.delenv("MSB_STATE_DIR")
    if os.geteuid() == 0:
        assert _agent.state_dir() == Path("/var/lib/microsandbox")
    else:
        env.setenv("XDG_STATE_HOME", "/x/state")
        assert _agent.state_dir() == Path("/x/state/microsandbox")


async def test_install_and_info(agent: AgentProcess) -> None:
    assert microsandbox.is_installed()
    levels = microsandbox.install()
    assert "container" in levels
    info = await microsandbox.agent_info()
    assert set(info.isolation) == set(levels) and info.version
