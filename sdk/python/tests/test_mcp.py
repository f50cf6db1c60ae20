"""The MCP server (`msb mcp`) driven by the official MCP Python client over stdio, as an AI tool
would: initialize, list tools, call each, errors as tool errors, sandboxes gone with the session.

The ``msb`` binary is ``MSB_CLI_BIN`` (the Makefile sets it), else the debug build."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from microsandbox import Sandbox

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

        started = await s.call_tool("sandbox_start", {"sandbox": name, "image": "python",
                                                      "memory": 256})
        assert not started.is_error, text(started)
        ran = await s.call_tool("sandbox_run_code", {"sandbox": name, "code": "print(6*7)"})
        assert not ran.is_error and ran.structured_content is not None
        assert ran.structured_content["stdout"] == "42\n"
        failed = await s.call_tool("sandbox_run_code",
                                   {"sandbox": name, "code": "import sys; sys.exit(3)"})
        assert failed.is_error and failed.structured_content is not None
        assert failed.structured_content["exit_code"] == 3
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
