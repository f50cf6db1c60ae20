"""Command execution results: collected output, and the handle of a streamed command."""

from __future__ import annotations

import asyncio
import builtins
import collections
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from . import _native
from .errors import ExecTimeoutError, InvalidConfigError
from .models import (
    ExecEvent,
    ExecOutput,
    ExitedEvent,
    SecretViolation,
    StartedEvent,
    StderrEvent,
    StdoutEvent,
)


def _event(t: tuple[Any, ...]) -> ExecEvent:
    kind = t[0]
    if kind == "stdout":
        return StdoutEvent(t[1])
    if kind == "stderr":
        return StderrEvent(t[1])
    if kind == "started":
        return StartedEvent(t[1])
    return ExitedEvent(t[1], t[2], t[3])


def _output(
    t: tuple[int, int | None, bool, bytes, bytes, list[dict[str, Any]]],
) -> ExecOutput:
    code, signal, timed_out, out, err, violations = t
    return ExecOutput(
        exit_code=code,
        stdout_bytes=out,
        stderr_bytes=err,
        signal=signal,
        timed_out=timed_out,
        secret_violations=tuple(SecretViolation._from_dict(v) for v in violations),
    )


class ExecHandle:
    """A running command started by :meth:`Sandbox.exec_stream`.

    Read its output with ``async for event in handle.events()`` (or ``async for event in
    handle``): :class:`StartedEvent`, then :class:`StdoutEvent` / :class:`StderrEvent` chunks,
    then one :class:`ExitedEvent`. Or collect whatever is left with :meth:`wait`.
    Used as ``async with``, the command is killed on exit if it still runs.
    """

    def __init__(self, stream: _native.ExecStream, *, stdin_pipe: bool, tty: bool) -> None:
        self._stream = stream
        self._buf: collections.deque[ExecEvent] = collections.deque()
        self._finished = False
        self._stdin_pipe = stdin_pipe
        self._tty = tty
        self.pid: int | None = None
        """The process's pid in the sandbox, once started."""
        self.exit: ExitedEvent | None = None
        """How the process ended, once it did."""

    def __repr__(self) -> str:
        state = "running" if self.exit is None else f"exited({self.exit.code})"
        return f"<ExecHandle pid={self.pid} {state}>"

    @property
    def done(self) -> bool:
        """Whether the exit event was received."""
        return self.exit is not None

    async def _next(self) -> ExecEvent | None:
        while not self._buf:
            if self._finished:
                return None
            batch = await self._stream.next_events()
            if not batch:
                self._finished = True
                return None
            self._buf.extend(_event(t) for t in batch)
        ev = self._buf.popleft()
        if isinstance(ev, StartedEvent):
            self.pid = ev.pid
        elif isinstance(ev, ExitedEvent):
            self.exit = ev
            self._finished = True
        return ev

    def events(self) -> AsyncIterator[ExecEvent]:
        """The events not read yet, until the process exits. Breaking out of the loop and
        calling ``events()`` again resumes where it stopped; read from one task at a time."""
        return _EventIterator(self)

    def __aiter__(self) -> AsyncIterator[ExecEvent]:
        return _EventIterator(self)

    async def write_stdin(self, data: bytes | str) -> None:
        """Writes to the process's stdin (needs ``stdin_pipe=True`` or a tty)."""
        if not (self._stdin_pipe or self._tty):
            raise InvalidConfigError("stdin is not open: pass stdin_pipe=True to exec_stream()")
        await self._stream.write_stdin(data.encode() if isinstance(data, str) else bytes(data))

    async def close_stdin(self) -> None:
        """Closes the process's stdin (it reads end-of-file)."""
        await self._stream.close_stdin()

    async def signal(self, signal: int) -> None:
        """Sends ``signal`` (e.g. ``signal.SIGTERM``) to the process group."""
        await self._stream.signal(int(signal))

    async def terminate(self) -> None:
        """Sends SIGTERM."""
        await self.signal(15)

    async def kill(self) -> None:
        """Sends SIGKILL."""
        await self.signal(9)

    async def resize(self, rows: int, cols: int) -> None:
        """Resizes the terminal (tty execs)."""
        await self._stream.resize(rows, cols)

    async def wait(self, timeout: float | None = None) -> ExecOutput:
        """Waits for the process to exit; returns its exit status and the output not already
        read through :meth:`events`. Raises :class:`ExecTimeoutError` after ``timeout`` seconds
        (the process keeps running; :meth:`kill` it if needed), and when the process was killed
        at the exec's own timeout (the error's ``output`` then holds what it wrote)."""
        out: builtins.list[bytes] = []
        err: builtins.list[bytes] = []

        async def drain() -> None:
            while (ev := await self._next()) is not None:
                if isinstance(ev, StdoutEvent):
                    out.append(ev.data)
                elif isinstance(ev, StderrEvent):
                    err.append(ev.data)

        if timeout is None:
            await drain()
        else:
            try:
                await asyncio.wait_for(drain(), timeout)
            except asyncio.TimeoutError:
                raise ExecTimeoutError(
                    f"the process (pid {self.pid}) did not exit within {timeout}s"
                ) from None
        ex = self.exit
        if ex is None:
            raise ExecTimeoutError("the exec stream ended without an exit status")
        output = ExecOutput(
            exit_code=ex.code,
            stdout_bytes=b"".join(out),
            stderr_bytes=b"".join(err),
            signal=ex.signal,
            timed_out=ex.timed_out,
        )
        if output.timed_out:
            raise ExecTimeoutError.killed(output, None)
        return output

    async def collect(self) -> ExecOutput:
        """:meth:`wait` without a time limit (the upstream SDK's name)."""
        return await self.wait()

    async def recv(self) -> ExecEvent | None:
        """The next event, or ``None`` once the stream has ended."""
        return await self._next()

    async def __aenter__(self) -> ExecHandle:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.exit is None and not self._finished:
            try:
                await self.kill()
                await asyncio.shield(self.wait(timeout=10))
            except Exception:
                pass


class _EventIterator:
    """Iterator over an ExecHandle's remaining events (a plain iterator rather than an async
    generator, so leaving a loop early leaves nothing pending to finalise)."""

    def __init__(self, handle: ExecHandle) -> None:
        self._handle = handle

    def __aiter__(self) -> _EventIterator:
        return self

    async def __anext__(self) -> ExecEvent:
        ev = await self._handle._next()
        if ev is None:
            raise StopAsyncIteration
        return ev
