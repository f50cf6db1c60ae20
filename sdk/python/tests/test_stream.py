"""Streaming exec: events with pattern matching, tail -f, stdin, tty, signals, big streams."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from microsandbox import (
    ExecEvent,
    ExecTimeoutError,
    ExitedEvent,
    InvalidConfigError,
    Sandbox,
    StartedEvent,
    StderrEvent,
    StdoutEvent,
)


async def test_events_with_pattern_matching(busybox: Sandbox) -> None:
    handle = await busybox.exec_stream(
        "sh", ["-c", "for i in 1 2 3; do echo $i; sleep 0.1; done; echo bye >&2; exit 4"]
    )
    stdout = b""
    stderr = b""
    kinds: list[str] = []
    exit_code = None
    async for event in handle.events():
        match event:
            case StartedEvent(pid=pid):
                assert pid > 0
                kinds.append("started")
            case StdoutEvent(data=data):
                stdout += data
                kinds.append("stdout")
            case StderrEvent(data=data):
                stderr += data
            case ExitedEvent(code=code):
                exit_code = code
                kinds.append("exited")
    assert stdout == b"1\n2\n3\n" and stderr == b"bye\n" and exit_code == 4
    # Output arrived as it was produced (lines 0.1 s apart), not all at the end.
    assert kinds[0] == "started" and kinds[-1] == "exited"
    assert kinds.count("stdout") >= 2
    assert handle.pid is not None and handle.exit == ExitedEvent(4, None, False)
    assert handle.done


async def test_tail_follow_then_kill(busybox: Sandbox) -> None:
    """The issue's `tail -f` example: follow a growing file, stop after the lines we want."""
    await busybox.fs.mkdir("/var/log", parents=True)
    await busybox.fs.write("/var/log/app.log", "")
    handle = await busybox.exec_stream("tail", ["-f", "/var/log/app.log"])
    seen = b""

    async def produce() -> None:
        for i in range(3):
            await asyncio.sleep(0.1)
            await busybox.fs.write("/var/log/app.log", f"line {i}\n", append=True)

    producer = asyncio.create_task(produce())
    exited = None
    async for event in handle.events():
        match event:
            case StdoutEvent(data=data):
                seen += data
                if seen.count(b"\n") == 3:
                    await handle.kill()
            case ExitedEvent() as ev:
                exited = ev
                break
    await producer
    assert seen == b"line 0\nline 1\nline 2\n"
    assert exited is not None and exited.signal == 9


async def test_async_iteration_and_wait(busybox: Sandbox) -> None:
    handle = await busybox.exec_stream("sh", ["-c", "echo a; sleep 0.2; echo b"])
    first: list[ExecEvent] = []
    async for event in handle:
        first.append(event)
        if isinstance(event, StdoutEvent):
            break
    # wait() returns what was not read yet.
    out = await handle.wait()
    assert out.stdout() == "b\n" and out.exit_code == 0
    assert isinstance(first[0], StartedEvent)

    # The upstream SDK's names: recv() an event at a time (None at the end), collect() the rest.
    handle = await busybox.exec_stream(cmd="sh", args=["-c", "echo a; echo b >&2; exit 4"])
    assert isinstance(await handle.recv(), StartedEvent)
    rest = await handle.collect()
    assert (rest.exit_code, rest.stdout_text, rest.stderr_text) == (4, "a\n", "b\n")
    assert await handle.recv() is None


async def test_stdin_pipe(busybox: Sandbox) -> None:
    handle = await busybox.exec_stream("sh", ["-c", "while read l; do echo got:$l; done; echo eof"],
                                       stdin_pipe=True)
    await handle.write_stdin(b"one\n")
    await handle.write_stdin("two\n")
    # Interactive: the answer to the first line comes before stdin is closed.
    got = b""
    async for ev in handle.events():
        if isinstance(ev, StdoutEvent):
            got += ev.data
            if got == b"got:one\ngot:two\n":
                break
    await handle.close_stdin()
    out = await handle.wait(timeout=10)
    assert out.stdout() == "eof\n" and out.success


async def test_stdin_needs_the_pipe(busybox: Sandbox) -> None:
    handle = await busybox.exec_stream("true")
    with pytest.raises(InvalidConfigError, match="stdin_pipe"):
        await handle.write_stdin(b"x")
    await handle.wait()


async def test_tty_and_resize(busybox: Sandbox) -> None:
    handle = await busybox.exec_stream(
        "sh", ["-c", "tty; stty size; read x; stty size"], tty=(30, 100)
    )
    first = b""
    async for ev in handle.events():
        if isinstance(ev, StdoutEvent):
            first += ev.data
            if b"30 100" in first:
                break
    await handle.resize(40, 120)
    await handle.write_stdin(b"\n")  # sent after the resize, on the same connection
    rest = await handle.wait(timeout=10)
    lines = first.decode().replace("\r", "").split("\n")
    assert lines[0].startswith("/dev/pts/") and lines[1] == "30 100"
    assert "40 120" in rest.stdout()


async def test_signal_and_terminate(busybox: Sandbox) -> None:
    handle = await busybox.exec_stream("sh", ["-c", "trap 'echo term; exit 7' TERM; "
                                                   "echo ready; while true; do sleep 0.05; done"])
    async for ev in handle.events():
        if isinstance(ev, StdoutEvent) and b"ready" in ev.data:
            break
    await handle.terminate()
    out = await handle.wait(timeout=10)
    assert out.exit_code == 7 and "term" in out.stdout()


async def test_wait_timeout_raises_and_context_manager_kills(busybox: Sandbox) -> None:
    async with await busybox.exec_stream("sleep", ["30"]) as handle:
        with pytest.raises(ExecTimeoutError):
            await handle.wait(timeout=0.3)
        assert not handle.done
    assert handle.done and handle.exit is not None and handle.exit.signal == 9


async def test_exec_timeout_in_stream(busybox: Sandbox) -> None:
    handle = await busybox.exec_stream("sleep", ["30"], timeout=0.3)
    with pytest.raises(ExecTimeoutError) as caught:
        await handle.wait(timeout=10)
    assert caught.value.output is not None and caught.value.output.timed_out


async def test_large_stream(busybox: Sandbox) -> None:
    """10 MiB streamed; chunks reassemble exactly."""
    size = 10 * 1024 * 1024
    digest = (await busybox.shell(
        f"head -c {size} /dev/urandom > /tmp/big && sha256sum /tmp/big | cut -d' ' -f1"
    )).stdout().strip()
    handle = await busybox.exec_stream("cat", ["/tmp/big"])
    h = hashlib.sha256()
    n = chunks = 0
    async for ev in handle.events():
        if isinstance(ev, StdoutEvent):
            h.update(ev.data)
            n += len(ev.data)
            chunks += 1
    assert n == size and h.hexdigest() == digest
    assert chunks > 1


def test_attach_on_a_terminal() -> None:
    """sb.attach() wires a real terminal to a sandbox shell (run in a child on a pty)."""
    import os
    import pty
    import select
    import sys
    import time

    code = (
        "import asyncio\n"
        "from microsandbox import Sandbox\n"
        "async def main():\n"
        "    async with await Sandbox.create(image='busybox') as sb:\n"
        "        code = await sb.attach('sh')\n"
        "    print('EXIT', code)\n"
        "asyncio.run(main())\n"
    )
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.execve(sys.executable, [sys.executable, "-c", code], dict(os.environ))
    seen = b""

    def read_until(needle: bytes, timeout: float = 60) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while needle not in seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no {needle!r} in {seen!r}"
            if select.select([fd], [], [], left)[0]:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk

    try:
        read_until(b"# ")  # the sandbox shell's prompt
        os.write(fd, b"echo hi-$((1+2)); stty size; exit 5\r")
        read_until(b"EXIT 5")
        assert b"hi-3" in seen
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
