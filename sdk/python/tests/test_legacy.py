"""The earlier SDK's API: PythonSandbox with persistent interpreter state, sb.command.run."""

from __future__ import annotations

import asyncio

import pytest

from microsandbox import CommandExecution, Execution, ExecTimeoutError, PythonSandbox


async def test_state_persists_between_runs() -> None:
    async with PythonSandbox.create(name="t-legacy-state") as sb:
        ex = await sb.run("name = 'Python'\nimport math")
        assert isinstance(ex, Execution) and not ex.has_error() and await ex.output() == ""
        ex = await sb.run("print(f'Hello {name}! {math.sqrt(16)}')")
        assert await ex.output() == "Hello Python! 4.0"
        assert ex.status == "success" and ex.language == "python"

        await sb.run("def f(x):\n    return x * 2\ncounter = 0")
        for _ in range(3):
            await sb.run("counter += 1")
        ex = await sb.run("f(counter)")  # a trailing expression is echoed, as in a REPL
        assert await ex.output() == "6"

        ex = await sb.run("print('partial', end='')\nraise ValueError('bad value')")
        assert ex.has_error() and ex.status == "error"
        assert await ex.output() == "partial"
        err = await ex.error()
        assert "ValueError: bad value" in err and "Traceback" in err
        assert "_run" not in err  # the driver's own frames are hidden

        ex = await sb.run("import sys; print('to stderr', file=sys.stderr); counter")
        assert await ex.output() == "3" and await ex.error() == "to stderr"
        ex = await sb.run("input()")  # stdin is not the driver's request channel
        assert ex.has_error() and "EOFError" in await ex.error()
        assert await (await sb.run("counter")).output() == "3"

        cmd = await sb.command.run("sh", ["-c", "echo hi; exit 2"])
        assert isinstance(cmd, CommandExecution)
        assert await cmd.output() == "hi" and cmd.exit_code == 2 and not cmd.success
        assert cmd.result.stdout() == "hi\n"  # the bytes as written

        m = await sb.metrics.all()  # upstream's dictionary
        assert m["name"] == "t-legacy-state" and m["running"] and await sb.metrics.is_running()
        assert m["memory_usage"] > 0 and m["disk_usage"] >= 0 and m["cpu_usage"] >= 0
        busy = await sb.command.run("sh", ["-c", "while :; do :; done & sleep 0.3; kill $!"])
        assert busy.success
        # CPU in percent of a core since the previous reading: the busy loop ran in between.
        assert 0 < await sb.metrics.cpu() <= 100 * 64


async def test_timeout_interrupts_and_keeps_state() -> None:
    sb = await PythonSandbox.create(name="t-legacy-timeout")
    try:
        await sb.run("kept = 42")
        with pytest.raises(ExecTimeoutError):
            await sb.run("import time\nwhile True: time.sleep(0.01)", timeout=0.5)
        assert await (await sb.run("kept")).output() == "42"
    finally:
        await sb.stop()
    assert not sb.is_started


async def test_interpreter_exit_is_reported_and_restarted() -> None:
    async with PythonSandbox.create(name="t-legacy-exit") as sb:
        await sb.run("x = 1")
        ex = await sb.run("import os; os._exit(3)")
        assert ex.has_error() and "state is lost" in await ex.error()
        ex = await sb.run("print('fresh', 'x' in globals())")
        assert await ex.output() == "fresh False"


async def test_concurrent_runs_are_serialised() -> None:
    async with PythonSandbox.create(name="t-legacy-conc") as sb:
        results = await asyncio.gather(*(sb.run(f"print({i})") for i in range(10)))
        assert [await r.output() for r in results] == [f"{i}" for i in range(10)]


async def test_node_sandbox_keeps_state_like_the_seed_example() -> None:
    """The seed README's JavaScript example, through the earlier API's NodeSandbox on the test
    registry's node image (Debian's nodejs)."""
    from microsandbox import NodeSandbox

    async with NodeSandbox.create(name="t-legacy-node") as sb:
        ex = await sb.run("var name = 'JavaScript'")
        ex = await sb.run("console.log(`Hello ${name}!`)")
        assert await ex.output() == "Hello JavaScript!" and ex.language == "nodejs"
        ex = await sb.run("[1, 2, 3].map(x => x * 2)")  # a value is echoed, as in a REPL
        assert await ex.output() == "[ 2, 4, 6 ]"
        ex = await sb.run("await new Promise(r => setTimeout(() => r(7), 10))")
        assert await ex.output() == "7"
        ex = await sb.run("throw new Error('bad value')")
        assert ex.has_error() and "Error: bad value" in await ex.error()
        assert await (await sb.run("name")).output() == "'JavaScript'"
        with pytest.raises(ExecTimeoutError):
            await sb.run("while (true) {}", timeout=0.5)
        assert await (await sb.run("name.length")).output() == "10"
