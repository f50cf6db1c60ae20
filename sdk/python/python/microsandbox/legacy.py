"""The earlier SDK's API, kept for existing code: ``PythonSandbox`` / ``NodeSandbox``.

::

    async with PythonSandbox.create(name="demo") as sb:
        await sb.run("x = 21")
        execution = await sb.run("print(x * 2)")
        print(await execution.output())        # 42
        result = await sb.command.run("ls", ["-la", "/"])
        print(await result.output())

``run()`` keeps interpreter state between calls: the code goes to one long-lived interpreter in
the sandbox (a small driver reading requests on stdin; each run's output ends with a random
sentinel line on stdout and stderr). The value of a trailing expression is printed, as in a REPL.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections.abc import Generator
from types import TracebackType
from typing import Any, ClassVar

from . import _native
from .errors import ExecTimeoutError, InvalidConfigError, SandboxNotRunningError
from .models import ExecOutput, Metrics, StderrEvent, StdoutEvent
from .sandbox import ExecHandle, Sandbox

__all__ = [
    "BaseSandbox",
    "PythonSandbox",
    "NodeSandbox",
    "Execution",
    "CommandExecution",
    "Command",
    "SandboxMetrics",
]

# The interpreters' drivers live in the Rust SDK (microsandbox::repl), shared with the MCP
# server: JSON lines {"id", "code"[, "timeout_ms"]} in, "<token>:<id>:<ok|error>\n" on stdout
# and stderr after each run.
_PYTHON_DRIVER = _native.PYTHON_REPL_DRIVER
_NODE_DRIVER = _native.NODE_REPL_DRIVER


class Execution:
    """Result of :meth:`BaseSandbox.run`."""

    def __init__(self, stdout: str, stderr: str, status: str, language: str) -> None:
        self._stdout = stdout
        self._stderr = stderr
        self._status = status
        self._language = language

    def __repr__(self) -> str:
        return f"<Execution {self._language} {self._status}>"

    async def output(self) -> str:
        """What the code printed to stdout, trailing whitespace removed (as upstream's)."""
        return self._stdout.rstrip()

    async def error(self) -> str:
        """What the code printed to stderr (the traceback of an exception, for one), trailing
        whitespace removed."""
        return self._stderr.rstrip()

    def has_error(self) -> bool:
        """Whether the code raised an exception (or wrote to stderr)."""
        return self._status != "success" or bool(self._stderr)

    @property
    def status(self) -> str:
        """``"success"`` or ``"error"``."""
        return self._status

    @property
    def language(self) -> str:
        return self._language


class CommandExecution:
    """Result of :meth:`Command.run`."""

    def __init__(self, command: str, args: list[str], result: ExecOutput) -> None:
        self._command = command
        self._args = args
        self._result = result

    def __repr__(self) -> str:
        return f"<CommandExecution {self._command} exit={self.exit_code}>"

    async def output(self) -> str:
        """Standard output, trailing whitespace removed (as upstream's); :attr:`result` has
        the bytes as written."""
        return self._result.stdout().rstrip()

    async def error(self) -> str:
        """Standard error, trailing whitespace removed."""
        return self._result.stderr().rstrip()

    @property
    def exit_code(self) -> int:
        return self._result.exit_code

    @property
    def success(self) -> bool:
        return self._result.success

    @property
    def command(self) -> str:
        return self._command

    @property
    def args(self) -> list[str]:
        return list(self._args)

    @property
    def result(self) -> ExecOutput:
        """The full :class:`ExecOutput`."""
        return self._result


class Command:
    """``sb.command``: shell commands."""

    def __init__(self, sandbox: BaseSandbox) -> None:
        self._sb = sandbox

    async def run(
        self, command: str, args: list[str] | None = None, timeout: int | None = None
    ) -> CommandExecution:
        """Runs ``command`` with ``args``; ``timeout`` in seconds."""
        sb = self._sb._require()
        argv = list(args or [])
        return CommandExecution(command, argv, await sb.exec(command, argv, timeout=timeout))


class SandboxMetrics:
    """``sb.metrics``: resource usage."""

    def __init__(self, sandbox: BaseSandbox) -> None:
        self._sb = sandbox
        self._last: tuple[int, float] | None = None

    async def all(self) -> dict[str, Any]:
        """Every figure, by the upstream SDK's keys: ``name``, ``running``, ``cpu_usage``
        (percent, :meth:`cpu`), ``memory_usage`` (MiB), ``disk_usage`` (bytes read and
        written); ``metrics`` holds the full :class:`Metrics`."""
        m = await self.sample()
        return {
            "name": m.name,
            "running": await self.is_running(),
            "cpu_usage": self._percent(m),
            "memory_usage": round(m.memory_mib),
            "disk_usage": m.disk_read_bytes + m.disk_write_bytes,
            "metrics": m,
        }

    async def sample(self) -> Metrics:
        """The sandbox's :class:`Metrics` as the node agent reports them."""
        return await self._sb._require().metrics()

    async def cpu(self) -> float:
        """CPU use in percent of one core: over the time since the previous reading of this
        accessor, or over 100 ms for the first."""
        if self._last is None:
            self._percent(await self.sample())
            await asyncio.sleep(0.1)
        return self._percent(await self.sample())

    def _percent(self, m: Metrics) -> float:
        now = time.monotonic()
        last, self._last = self._last, (m.cpu_usage_us, now)
        if last is None or now <= last[1]:
            return 0.0
        used_us = max(0, m.cpu_usage_us - last[0])
        return round(100.0 * used_us / ((now - last[1]) * 1e6), 2)

    async def memory(self) -> float:
        """Memory in use, in MiB."""
        return (await self.sample()).memory_mib

    async def disk(self) -> int:
        """Bytes read from and written to disk so far."""
        m = await self.sample()
        return m.disk_read_bytes + m.disk_write_bytes

    async def is_running(self) -> bool:
        sb = self._sb._sandbox
        if sb is None:
            return False
        try:
            return (await sb.refresh()).running
        except Exception:
            return False


class _Repl:
    """One long-lived interpreter process in a sandbox."""

    def __init__(self, handle: ExecHandle, token: str) -> None:
        self.handle = handle
        self.token = token
        self.next_id = 0
        self.out = bytearray()
        self.err = bytearray()
        self.alive = True

    async def read_until_done(self, marker: bytes) -> str | None:
        """Reads output until both streams carry ``marker``; returns the status, or None if
        the process exited first."""
        seen_out = seen_err = -1
        status = None
        while seen_out < 0 or seen_err < 0:
            if seen_out < 0:
                seen_out = self.out.find(marker)
            if seen_err < 0:
                seen_err = self.err.find(marker)
            if seen_out >= 0 and seen_err >= 0:
                break
            ev = await self.handle._next()
            if ev is None:
                self.alive = False
                return None
            if isinstance(ev, StdoutEvent):
                self.out += ev.data
            elif isinstance(ev, StderrEvent):
                self.err += ev.data
        end = self.out.find(b"\n", seen_out)
        status = self.out[seen_out + len(marker) : end].decode()
        return status

    def take(self, marker: bytes) -> tuple[bytes, bytes]:
        """The output before ``marker`` on each stream; drops it and the marker lines."""
        res = []
        for buf in (self.out, self.err):
            i = buf.find(marker)
            if i < 0:
                res.append(bytes(buf))
                del buf[:]
                continue
            end = buf.find(b"\n", i)
            res.append(bytes(buf[:i]))
            del buf[: end + 1 if end >= 0 else len(buf)]
        return res[0], res[1]


class _Starter:
    """What ``create()`` returns: ``async with X.create(...) as sb`` (the sandbox is removed at
    the end) or ``sb = await X.create(...)`` (call ``await sb.stop()`` when done)."""

    def __init__(self, sandbox: BaseSandbox, start_kwargs: dict[str, Any]) -> None:
        self._sb = sandbox
        self._kw = start_kwargs

    def __await__(self) -> Generator[Any, None, BaseSandbox]:
        return self._start().__await__()

    async def _start(self) -> BaseSandbox:
        await self._sb.start(**self._kw)
        return self._sb

    async def __aenter__(self) -> BaseSandbox:
        return await self._start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.shield(self._sb.stop())


class BaseSandbox:
    """A sandbox running one language's interpreter (earlier SDK API)."""

    language: ClassVar[str] = ""
    default_image: ClassVar[str] = ""

    def __init__(
        self,
        server_url: str | None = None,
        namespace: str = "default",
        name: str | None = None,
        api_key: str | None = None,
    ) -> None:
        """``server_url`` / ``api_key``: an explicit agent (``http://HOST:PORT`` or a unix socket
        path) and its token; by default the local agent (started if needed). ``namespace`` is
        accepted for compatibility and ignored."""
        self._server_url = server_url
        self._api_key = api_key
        self._namespace = namespace
        self._name = name or f"{self.language or 'sandbox'}-{secrets.token_hex(4)}"
        self._sandbox: Sandbox | None = None
        self._repl: _Repl | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def create(
        cls,
        server_url: str | None = None,
        namespace: str = "default",
        name: str | None = None,
        api_key: str | None = None,
        cpus: float | None = None,
        memory: int | None = None,
        timeout: float | None = None,
        image: str | None = None,
    ) -> _Starter:
        """Creates and starts a sandbox: ``async with PythonSandbox.create() as sb:``."""
        sb = cls(server_url=server_url, namespace=namespace, name=name, api_key=api_key)
        kw: dict[str, Any] = {"image": image}
        if cpus is not None:
            kw["cpus"] = cpus
        if memory is not None:
            kw["memory"] = memory
        if timeout is not None:
            kw["timeout"] = timeout
        return _Starter(sb, kw)

    @property
    def name(self) -> str:
        return self._name

    @property
    def sandbox(self) -> Sandbox:
        """The underlying :class:`Sandbox` (after :meth:`start`)."""
        return self._require()

    @property
    def is_started(self) -> bool:
        return self._sandbox is not None

    async def get_default_image(self) -> str:
        return self.default_image

    def _require(self) -> Sandbox:
        if self._sandbox is None:
            raise SandboxNotRunningError(
                f"sandbox {self._name!r} is not started", hint="call start() or use create()"
            )
        return self._sandbox

    async def start(
        self,
        image: str | None = None,
        memory: int = 512,
        cpus: float = 1.0,
        timeout: float = 180.0,
    ) -> None:
        """Creates the sandbox (attached to this process). ``cpus`` is rounded up."""
        if self._sandbox is not None:
            return
        client = None
        if self._server_url is not None:
            client = _native.Client(self._server_url, self._api_key)
        create = Sandbox._create(
            self._name,
            image=image or await self.get_default_image(),
            memory=memory,
            cpus=max(1, math.ceil(cpus)),
            env=None,
            workdir=None,
            isolation=None,
            pull_policy="if-not-present",
            volumes=None,
            network=None,
            secrets=None,
            patches=None,
            pids_limit=None,
            detached=False,
            client=client,
        )
        try:
            self._sandbox = await asyncio.wait_for(create, timeout)
        except asyncio.TimeoutError:
            raise ExecTimeoutError(
                f"sandbox {self._name!r} did not start within {timeout}s"
            ) from None

    async def stop(self) -> None:
        """Removes the sandbox (and its interpreter state)."""
        sb, self._sandbox, self._repl = self._sandbox, None, None
        if sb is not None:
            await sb.destroy()

    async def __aenter__(self) -> BaseSandbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.shield(self.stop())

    @property
    def command(self) -> Command:
        return Command(self)

    @property
    def metrics(self) -> SandboxMetrics:
        return SandboxMetrics(self)

    def _driver(self, token: str) -> tuple[str, list[str]]:
        raise NotImplementedError

    def _request(self, rid: int, code: str, timeout: float | None) -> dict[str, Any]:
        return {"id": rid, "code": code}

    def _wait_timeout(self, timeout: float | None) -> float | None:
        """How long a run is waited for before it is interrupted from outside."""
        return timeout

    def _timed_out_in_interpreter(self, stderr: bytes) -> bool:
        """Whether the interpreter stopped the run at its timeout itself (state kept)."""
        return False

    async def _start_repl(self) -> _Repl:
        token = f"__msb_{secrets.token_hex(12)}__"
        cmd, args = self._driver(token)
        handle = await self._require().exec_stream(cmd, args, stdin_pipe=True)
        return _Repl(handle, token)

    async def run(self, code: str, timeout: float | None = None) -> Execution:
        """Runs ``code`` in the sandbox's interpreter; state persists between runs.

        ``timeout`` (seconds): the run is interrupted (KeyboardInterrupt for Python; the
        interpreter is restarted if that does not work) and :class:`ExecTimeoutError` raised.
        """
        if not isinstance(code, str):
            raise InvalidConfigError(f"code must be a str, not {type(code).__name__}")
        async with self._lock:
            if self._repl is None or not self._repl.alive:
                self._repl = await self._start_repl()
            repl = self._repl
            rid = repl.next_id
            repl.next_id += 1
            marker = f"{repl.token}:{rid}:".encode()
            line = json.dumps(self._request(rid, code, timeout)) + "\n"
            await repl.handle.write_stdin(line.encode())
            try:
                status = await asyncio.wait_for(
                    repl.read_until_done(marker), self._wait_timeout(timeout)
                )
            except asyncio.TimeoutError:
                await self._interrupt(repl, marker)
                raise ExecTimeoutError(f"code did not finish within {timeout}s") from None
            out, err = repl.take(marker)
            if status == "error" and self._timed_out_in_interpreter(err):
                raise ExecTimeoutError(f"code did not finish within {timeout}s")
            if status is None:
                self._repl = None
                note = b"\nthe interpreter exited; its state is lost\n"
                return Execution(
                    out.decode(errors="replace"),
                    (err + note).decode(errors="replace"),
                    "error",
                    self.language,
                )
            return Execution(
                out.decode(errors="replace"),
                err.decode(errors="replace"),
                "success" if status == "ok" else "error",
                self.language,
            )

    async def _interrupt(self, repl: _Repl, marker: bytes) -> None:
        """Interrupts a run that timed out; restarts the interpreter if that fails."""
        try:
            await repl.handle.signal(2)
            status = await asyncio.wait_for(repl.read_until_done(marker), 5)
            repl.take(marker)
            if status is not None:
                return
        except (asyncio.TimeoutError, Exception):
            pass
        try:
            await repl.handle.kill()
        except Exception:
            pass
        self._repl = None


class PythonSandbox(BaseSandbox):
    """A sandbox with a persistent Python interpreter (default image ``python``)."""

    language = "python"
    default_image = "python"

    def _driver(self, token: str) -> tuple[str, list[str]]:
        return "python3", ["-u", "-c", _PYTHON_DRIVER, token]


class NodeSandbox(BaseSandbox):
    """A sandbox with a persistent Node.js context (default image ``node``)."""

    language = "nodejs"
    default_image = "node"

    def _driver(self, token: str) -> tuple[str, list[str]]:
        return "node", ["-e", _NODE_DRIVER, token]

    def _request(self, rid: int, code: str, timeout: float | None) -> dict[str, Any]:
        req: dict[str, Any] = {"id": rid, "code": code}
        if timeout is not None:
            req["timeout_ms"] = max(1, math.ceil(timeout * 1000))
        return req

    def _wait_timeout(self, timeout: float | None) -> float | None:
        # node stops synchronous code at timeout_ms itself, keeping its context; the outside
        # interrupt (which restarts node) is for what it cannot stop (pending promises).
        return None if timeout is None else timeout + 2.0

    def _timed_out_in_interpreter(self, stderr: bytes) -> bool:
        return b"Script execution timed out" in stderr
