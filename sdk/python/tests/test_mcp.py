"""The MCP server driven by the official MCP Python client over stdio (`msb mcp`) and over
streamable HTTP (the agent's `/mcp`), as an AI tool would: initialize, list tools, call each,
errors as tool errors, sandboxes gone with the session.

The ``msb`` binary is ``MSB_CLI_BIN`` (the Makefile sets it), else the debug build."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import TextContent

from microsandbox import Sandbox, _native

from .conftest import (
    AgentProcess,
    agent_binary,
    cleanup_agent,
    guest_binary,
    new_state_dir,
    spawn_agent,
)

REPO = Path(__file__).resolve().parents[3]


def msb_binary() -> str:
    env = os.environ.get("MSB_CLI_BIN")
    path = Path(env) if env else REPO / "target" / "debug" / "msb"
    if not os.access(path, os.X_OK):
        pytest.fail(f"no msb at {path}: `cargo build -p microsandbox-cli` or set MSB_CLI_BIN")
    return str(path)


@asynccontextmanager
async def session() -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=msb_binary(), args=["mcp"], env=dict(os.environ))
    async with stdio_client(params) as streams:
        async with ClientSession(streams[0], streams[1]) as s:
            await s.initialize()
            yield s


def text(result: Any) -> str:
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def test_tools_over_stdio(name: str) -> None:
    async with session() as s:
        tools = {t.name: t for t in (await s.list_tools()).tools}
        for want in ("sandbox_start", "sandbox_run_code", "sandbox_run_command",
                     "sandbox_read_file", "sandbox_write_file", "sandbox_get_metrics",
                     "sandbox_list", "sandbox_stop", "sandbox_remove"):
            assert want in tools, sorted(tools)
        # Typed schemas: the start tool takes a required sandbox name.
        schema = tools["sandbox_start"].input_schema
        assert "sandbox" in schema["properties"] and "sandbox" in schema.get("required", [])
        # Upstream's prompts, with its argument names.
        prompts = {p.name: p for p in (await s.list_prompts()).prompts}
        assert {"create_python_sandbox", "create_node_sandbox"} <= set(prompts)
        args = {a.name: a for a in prompts["create_python_sandbox"].arguments or []}
        assert args["sandbox_name"].required and not args["namespace"].required
        got = await s.get_prompt("create_python_sandbox", {"sandbox_name": "data"})
        said = got.messages[0].content
        assert isinstance(said, TextContent)
        assert '"data"' in said.text and "sandbox_start" in said.text

        started = await s.call_tool("sandbox_start", {"sandbox": name, "image": "python",
                                                      "memory": 256})
        assert not started.is_error, text(started)
        ran = await s.call_tool("sandbox_run_code", {"sandbox": name, "code": "print(6*7)"})
        assert not ran.is_error and ran.structured_content is not None
        assert ran.structured_content["stdout"] == "42\n"
        # The interpreter lives on between calls (upstream's REPL): what one call defines, the
        # next finds; a trailing expression is echoed.
        await s.call_tool("sandbox_run_code", {"sandbox": name, "code": "who = 'Python'"})
        hello = await s.call_tool("sandbox_run_code",
                                  {"sandbox": name, "code": "print(f'Hello {who}!')\n6*7"})
        assert hello.structured_content is not None, text(hello)
        assert hello.structured_content["stdout"] == "Hello Python!\n42\n"
        # Code that raises is a result (as upstream's server answers), its `success` false.
        failed = await s.call_tool("sandbox_run_code",
                                   {"sandbox": name, "code": "import sys; sys.exit(3)"})
        assert not failed.is_error and failed.structured_content is not None
        assert failed.structured_content["success"] is False
        assert failed.structured_content["status"] == "error"
        assert "SystemExit: 3" in failed.structured_content["stderr"]
        # A command that exits non-zero, likewise.
        three = await s.call_tool("sandbox_run_code", {"sandbox": name, "language": "shell",
                                                       "code": "echo out; exit 3"})
        assert not three.is_error and three.structured_content is not None
        assert three.structured_content["exit_code"] == 3
        assert three.structured_content["success"] is False
        # Past its timeout a run is interrupted; the interpreter keeps its state.
        slow = await s.call_tool("sandbox_run_code", {"sandbox": name, "timeout_secs": 0.5,
                                                      "code": "import time; time.sleep(30)"})
        assert slow.is_error and "timed out" in text(slow)
        kept = await s.call_tool("sandbox_run_code", {"sandbox": name, "code": "who"})
        assert kept.structured_content is not None
        assert kept.structured_content["stdout"] == "'Python'\n"
        cmd = await s.call_tool("sandbox_run_command",
                                {"sandbox": name, "command": "sh", "args": ["-c", "echo $0", "x"]})
        assert not cmd.is_error and cmd.structured_content["stdout"] == "x\n"
        wrote = await s.call_tool("sandbox_write_file",
                                  {"sandbox": name, "path": "/tmp/note.txt", "content": "hé"})
        assert not wrote.is_error, text(wrote)
        read = await s.call_tool("sandbox_read_file", {"sandbox": name, "path": "/tmp/note.txt"})
        assert text(read) == "hé"
        metrics = await s.call_tool("sandbox_get_metrics", {"sandbox": name})
        assert metrics.structured_content is not None
        assert metrics.structured_content["memory_bytes"] > 0
        # The upstream server's keys, one sandbox's also at the top level.
        [entry] = metrics.structured_content["sandboxes"]
        assert entry["name"] == name and entry["running"] is True
        assert entry["memory_usage"] >= 0 and entry["disk_usage"] >= 0
        assert 0 <= entry["cpu_usage"] <= 100 * 64
        listed = await s.call_tool("sandbox_list", {})
        assert [x["name"] for x in json.loads(text(listed))["sandboxes"]] == [name]
        # Errors come back as tool errors; the server keeps serving.
        timed = await s.call_tool("sandbox_run_command",
                                  {"sandbox": name, "command": "sleep", "args": ["30"],
                                   "timeout_secs": 0.5})
        assert timed.is_error and "timed out" in text(timed)
        missing = await s.call_tool("sandbox_run_command", {"sandbox": name, "command": "nope"})
        assert missing.is_error and "not found" in text(missing)
        other = await s.call_tool("sandbox_run_code", {"sandbox": "not-mine", "code": "1"})
        assert other.is_error and "no sandbox" in text(other)
        bad = await s.call_tool("sandbox_run_code", {"sandbox": 5})
        assert bad.is_error
        lang = await s.call_tool("sandbox_run_code",
                                 {"sandbox": name, "code": "1", "language": "cobol"})
        assert lang.is_error and "not supported" in text(lang)
        stopped = await s.call_tool("sandbox_stop", {"sandbox": name})
        assert not stopped.is_error and stopped.structured_content["state"] == "stopped"
        assert (await Sandbox.get(name)).info.state == "stopped"
        # A stopped sandbox has figures too: not running (upstream: "regardless of whether
        # it's running").
        after = await s.call_tool("sandbox_get_metrics", {})
        assert not after.is_error, text(after)
        assert after.structured_content["sandboxes"] == [
            {"name": name, "running": False, "cpu_usage": None, "memory_usage": None,
             "disk_usage": None}]
    # The session ended: its sandboxes are gone.
    assert name not in {i.name for i in await Sandbox.list()}


async def test_javascript_on_the_node_image(name: str) -> None:
    async with session() as s:
        started = await s.call_tool("sandbox_start", {"sandbox": name, "image": "node"})
        assert not started.is_error, text(started)
        ran = await s.call_tool("sandbox_run_code", {"sandbox": name, "language": "javascript",
                                                     "code": "console.log([1,2].map(x => x * 21))"})
        assert not ran.is_error and ran.structured_content is not None
        assert ran.structured_content["stdout"] == "[ 21, 42 ]\n"


async def test_remove_and_keep(name: str) -> None:
    async with session() as s:
        await s.call_tool("sandbox_start", {"sandbox": name, "image": "busybox"})
        removed = await s.call_tool("sandbox_remove", {"sandbox": name})
        assert not removed.is_error, text(removed)
        assert name not in {i.name for i in await Sandbox.list()}
        again = await s.call_tool("sandbox_remove", {"sandbox": name})
        assert again.is_error


# --- MCP over streamable HTTP: the agent's /mcp, as the upstream server serves it -------------



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def listening_agent(*extra: str) -> Iterator[tuple[AgentProcess, str]]:
    """A second agent listening on a loopback port; yields it and its /mcp URL."""
    port = free_port()
    state = new_state_dir(Path(tempfile.mkdtemp(prefix="msbmcp-", dir="/tmp")))
    a = spawn_agent(state, agent_binary(), guest_binary(),
                    ("--listen", f"127.0.0.1:{port}", *extra))
    try:
        yield a, f"http://127.0.0.1:{port}/mcp"
    finally:
        cleanup_agent(a)


@pytest.fixture(scope="module")
def token_agent() -> Iterator[tuple[AgentProcess, str]]:
    with listening_agent() as a:
        yield a


@pytest.fixture(scope="module")
def dev_agent() -> Iterator[tuple[AgentProcess, str]]:
    with listening_agent("--mcp-without-token") as a:
        yield a


def post(url: str, headers: dict[str, str]) -> int:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "content-type": "application/json", "accept": "application/json, text/event-stream",
        **headers})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_http_needs_the_agent_token(token_agent: tuple[AgentProcess, str]) -> None:
    agent, url = token_agent
    assert post(url, {}) == 401
    assert post(url, {"authorization": "Bearer wrong"}) == 401
    # A page of another site cannot reach it through DNS rebinding: foreign Host names refused.
    token = (agent.state / "agent.token").read_text().strip()
    assert post(url, {"authorization": f"Bearer {token}", "host": "evil.example"}) == 403


async def test_tools_over_http_upstream_shape(token_agent: tuple[AgentProcess, str],
                                              name: str) -> None:
    agent, url = token_agent
    token = (agent.state / "agent.token").read_text().strip()
    client = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with streamable_http_client(url, http_client=client) as (r, w, *_):
        async with ClientSession(r, w) as s:
            await s.initialize()
            names = {t.name for t in (await s.list_tools()).tools}
            assert {"sandbox_start", "sandbox_stop", "sandbox_run_code",
                    "sandbox_run_command", "sandbox_get_metrics"} <= names
            # The upstream server's argument shape: namespace + config with "K=V" envs.
            started = await s.call_tool("sandbox_start", {
                "sandbox": name, "namespace": "default",
                "config": {"image": "microsandbox/python", "memory": 256, "envs": ["GREETING=hi"]}})
            assert not started.is_error, text(started)
            ran = await s.call_tool("sandbox_run_code", {
                "sandbox": name, "namespace": "default", "language": "python",
                "code": "import os; print(os.environ['GREETING'], 6*7)"})
            assert ran.structured_content is not None, text(ran)
            assert ran.structured_content["stdout"] == "hi 42\n"
            bad = await s.call_tool("sandbox_start", {
                "sandbox": "x", "namespace": "default", "config": {"envs": ["NOEQUALS"]}})
            assert bad.is_error and "NOEQUALS" in text(bad)
            # Stop frees the name, as upstream: start it again afresh.
            stopped = await s.call_tool("sandbox_stop", {"sandbox": name, "namespace": "default"})
            assert not stopped.is_error, text(stopped)
            again = await s.call_tool("sandbox_start", {
                "sandbox": name, "namespace": "default", "config": {"image": "busybox"}})
            assert not again.is_error, text(again)
            gone = await s.call_tool("sandbox_run_command", {
                "sandbox": name, "command": "cat", "args": ["/usr/bin/python3"]})
            # A fresh busybox sandbox, nothing of the python one: cat fails (a result, not a
            # tool error).
            assert not gone.is_error and gone.structured_content is not None
            assert gone.structured_content["success"] is False, text(gone)
            removed = await s.call_tool("sandbox_remove", {"sandbox": name})
            assert not removed.is_error, text(removed)
    c = _native.Client.from_state_dir(agent.state)
    assert name not in {x["name"] for x in await c.list()}


def test_dev_mode_needs_a_loopback_listener() -> None:
    out = subprocess.run(
        [str(agent_binary()), "serve", "--state-dir", tempfile.mkdtemp(prefix="msbdev-"),
         "--listen", "0.0.0.0:0", "--mcp-without-token"],
        capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "loopback" in out.stderr


async def test_dev_mode_stateless_requests_share_sandboxes(
    dev_agent: tuple[AgentProcess, str], name: str
) -> None:
    """`msb server start --dev` (the agent's --mcp-without-token): no token, and a client of
    the session-less 2026-07-28 protocol finds in one request what it started in another."""
    _, url = dev_agent
    async with Client(url) as c:
        started = await c.call_tool("sandbox_start", {
            "sandbox": name, "namespace": "default", "config": {"image": "busybox"}})
        assert not started.is_error, text(started)
        ran = await c.call_tool("sandbox_run_command", {
            "sandbox": name, "namespace": "default", "command": "echo", "args": ["ok"]})
        assert ran.structured_content is not None and ran.structured_content["stdout"] == "ok\n"
        metrics = await c.call_tool("sandbox_get_metrics", {"namespace": "default"})
        assert not metrics.is_error and metrics.structured_content is not None
        assert metrics.structured_content["name"] == name
        removed = await c.call_tool("sandbox_remove", {"sandbox": name})
        assert not removed.is_error, text(removed)
