"""Sandboxes: lifecycle, command execution (collected and streamed), filesystem, metrics."""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import dataclasses
import json
import math
import os
import secrets as _secrets
import stat as _stat
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, TypeAlias

from . import _agent, _native
from . import cluster as _cluster
from .cluster import Cluster, ModeArg
from .config import (
    NetworkPolicy,
    Patch,
    Secret,
    Volume,
    _check_not_enforced,
    _mounts_wire,
    _patches_wire,
)
from .errors import (
    ExecTimeoutError,
    FilesystemPathNotFoundError,
    InvalidConfigError,
    SandboxNotFoundError,
    SandboxNotRunningError,
    UnsupportedFeatureError,
)
from .models import (
    ExecEvent,
    ExecOutput,
    ExitedEvent,
    FileStat,
    Isolation,
    Metrics,
    SecretViolation,
    PullPolicy,
    Rlimit,
    SandboxInfo,
    StartedEvent,
    StderrEvent,
    StdoutEvent,
)

__all__ = ["Sandbox", "SandboxFs", "ExecHandle", "all_sandbox_metrics", "pull_image"]

RlimitsArg: TypeAlias = Mapping[str, int | tuple[int, int]] | Iterable[Rlimit] | None
"""``{"nofile": 64}``, ``{"nofile": (64, 128)}`` or ``[Rlimit("nofile", 64, 128)]``."""

TtyArg: TypeAlias = bool | tuple[int, int] | None
"""``True`` for a 24x80 terminal, or ``(rows, cols)``."""

# Leases of the attached sandboxes this process created: kept here, not only on the handle, so
# a sandbox lives as long as the process (or until stopped/removed), not as long as the handle.
_leases: dict[str, _native.Lease] = {}


# ---------------------------------------------------------------------------------------------
# Request building (pure; unit-tested without an agent)


def _timeout_ms(timeout: float | None) -> int | None:
    if timeout is None:
        return None
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise InvalidConfigError(f"timeout must be a positive number of seconds, not {timeout!r}")
    return max(1, math.ceil(timeout * 1000))


def _str_map(what: str, m: Mapping[str, str] | None) -> dict[str, str]:
    if m is None:
        return {}
    if not isinstance(m, Mapping):
        raise InvalidConfigError(f"{what} must be a mapping of str to str, not {m!r}")
    out = {}
    for k, v in m.items():
        if not isinstance(k, str) or not k or "=" in k or "\0" in k:
            raise InvalidConfigError(f"invalid {what} name {k!r}")
        if not isinstance(v, str):
            raise InvalidConfigError(f"{what}[{k!r}] must be a str, not {type(v).__name__}")
        out[k] = v
    return out


def _rlimits(rlimits: RlimitsArg) -> builtins.list[dict[str, Any]]:
    if rlimits is None:
        return []
    out = []
    if isinstance(rlimits, Mapping):
        for res, val in rlimits.items():
            if isinstance(val, tuple):
                soft, hard = val
                out.append(Rlimit(res, soft, hard)._to_dict())
            else:
                out.append(Rlimit(res, val)._to_dict())
        return out
    for r in rlimits:
        if not isinstance(r, Rlimit):
            raise InvalidConfigError(f"rlimits must be Rlimit objects or a mapping, not {r!r}")
        out.append(r._to_dict())
    return out


def _args(args: Sequence[str] | None) -> builtins.list[str]:
    if args is None:
        return []
    if isinstance(args, (str, bytes)):
        raise InvalidConfigError(
            f"args must be a list of strings, not a single string ({args!r}); "
            "use sb.shell(script) to run a shell command line"
        )
    out = list(args)
    for a in out:
        if not isinstance(a, str):
            raise InvalidConfigError(f"args must be strings, not {type(a).__name__} ({a!r})")
    return out


def _tty(tty: TtyArg) -> dict[str, int] | None:
    if tty is None or tty is False:
        return None
    if tty is True:
        return {"rows": 24, "cols": 80}
    rows, cols = tty
    if rows <= 0 or cols <= 0:
        raise InvalidConfigError(f"tty size must be positive, not {tty!r}")
    return {"rows": rows, "cols": cols}


def _exec_request(
    command: str,
    args: Sequence[str] | None,
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    rlimits: RlimitsArg = None,
    user: str | None = None,
    stdin_data: bytes | str | None = None,
    stdin_pipe: bool = False,
    tty: TtyArg = None,
) -> str:
    if not isinstance(command, str) or not command:
        raise InvalidConfigError(f"command must be a non-empty string, not {command!r}")
    req: dict[str, Any] = {
        "command": command,
        "args": _args(args),
        "cwd": cwd,
        "env": _str_map("env", env),
        "user": user,
        "timeout_ms": _timeout_ms(timeout),
        "rlimits": _rlimits(rlimits),
        "stdin": bool(stdin_pipe),
        "tty": _tty(tty),
    }
    if stdin_data is not None:
        import base64

        data = stdin_data.encode() if isinstance(stdin_data, str) else bytes(stdin_data)
        req["stdin_b64"] = base64.b64encode(data).decode("ascii")
    return json.dumps(req)


def _create_request(
    name: str,
    *,
    image: str,
    memory: int,
    cpus: int,
    env: Mapping[str, str] | None,
    workdir: str | None,
    isolation: Isolation | None,
    pull_policy: PullPolicy,
    detached: bool,
    pids_limit: int | None,
    patches: Iterable[Patch] | None = None,
    volumes: Mapping[str, Volume] | None = None,
    network: NetworkPolicy | None = None,
    secrets: Iterable[Secret] | None = None,
) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidConfigError(f"a sandbox needs a non-empty name, not {name!r}")
    if not isinstance(image, str) or not image:
        raise InvalidConfigError(f"image must be a non-empty string, not {image!r}")
    if isinstance(memory, bool) or not isinstance(memory, int) or memory <= 0:
        raise InvalidConfigError(f"memory is in MiB and must be a positive int, not {memory!r}")
    if isinstance(cpus, float) and float(cpus).is_integer():
        cpus = int(cpus)
    if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus <= 0:
        raise InvalidConfigError(f"cpus must be a positive whole number, not {cpus!r}")
    if isolation not in (None, "microvm", "container"):
        raise InvalidConfigError(
            f"isolation must be 'microvm', 'container' or None (strongest), not {isolation!r}"
        )
    policy = str(pull_policy).replace("_", "-").lower()
    if policy not in ("always", "if-not-present", "never"):
        raise InvalidConfigError(
            f"pull_policy must be 'always', 'if-not-present' or 'never', not {pull_policy!r}"
        )
    if pids_limit is not None and (not isinstance(pids_limit, int) or pids_limit <= 0):
        raise InvalidConfigError(f"pids_limit must be a positive int, not {pids_limit!r}")
    return json.dumps(
        {
            "name": name,
            "image": image,
            "memory_mib": memory,
            "cpus": cpus,
            "env": _str_map("env", env),
            "workdir": workdir,
            "isolation": isolation,
            "pull_policy": policy,
            "detached": detached,
            "pids_limit": pids_limit,
            "patches": _patches_wire(patches),
            "mounts": _mounts_wire(volumes, memory),
            "network": (network or NetworkPolicy.none())._wire(),
            "secrets": _secrets_wire(secrets),
        }
    )


def _secrets_wire(secrets: Iterable[Secret] | None) -> list[dict[str, Any]]:
    """The node agent's form of ``secrets=`` (``SecretSpec`` in wire/src/api.rs)."""
    return [
        {"env": s.name, "value": s.value, "allow_hosts": list(s.allow_hosts)}
        for s in secrets or ()
    ]


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


# ---------------------------------------------------------------------------------------------
# Streaming exec


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
        (the process keeps running; :meth:`kill` it if needed)."""
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
        return ExecOutput(
            exit_code=ex.code,
            stdout_bytes=b"".join(out),
            stderr_bytes=b"".join(err),
            signal=ex.signal,
            timed_out=ex.timed_out,
        )

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


# ---------------------------------------------------------------------------------------------
# Filesystem


class SandboxFs:
    """Files of a sandbox (``sb.fs``). Paths are absolute paths inside the sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox

    @property
    def _c(self) -> _native.Client:
        return self._sb._client

    @property
    def _name(self) -> str:
        return self._sb._target

    async def read(self, path: str) -> bytes:
        """A whole file's contents."""
        data: bytes = await self._c.fs_read(self._name, path)
        return data

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """A whole file's contents, decoded."""
        return (await self.read(path)).decode(encoding)

    async def write(
        self, path: str, data: bytes | str, *, mode: int | None = None, append: bool = False
    ) -> int:
        """Writes ``data`` (``str`` is UTF-8 encoded) to ``path``, created or truncated (or
        appended to with ``append=True``); ``mode`` (e.g. ``0o755``) applies to a new file.
        Returns the bytes written."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        n: int = await self._c.fs_write(self._name, path, raw, mode, append)
        return n

    async def list(self, path: str = "/") -> builtins.list[FileStat]:
        """The entries of a directory."""
        entries = await self._c.fs_list(self._name, path)
        return [FileStat._from_dict(e) for e in entries]

    async def stat(self, path: str) -> FileStat:
        """Metadata of a path (raises :class:`FilesystemPathNotFoundError` if missing)."""
        return FileStat._from_dict(await self._c.fs_stat(self._name, path))

    async def exists(self, path: str) -> bool:
        """Whether the path exists."""
        try:
            await self._c.fs_stat(self._name, path)
            return True
        except FilesystemPathNotFoundError:
            return False

    async def mkdir(self, path: str, *, parents: bool = False) -> None:
        """Creates a directory (with ``parents=True``, its missing parents too, and no error if
        it exists)."""
        await self._c.fs_mkdir(self._name, path, parents)

    async def remove(self, path: str, *, recursive: bool = False) -> None:
        """Removes a file, or a directory (non-empty ones need ``recursive=True``)."""
        await self._c.fs_remove(self._name, path, recursive)

    async def rename(self, src: str, dst: str) -> None:
        """Renames (moves) a path inside the sandbox."""
        await self._c.fs_rename(self._name, src, dst)

    async def copy(self, src: str, dst: str) -> None:
        """Copies a path inside the sandbox."""
        await self._c.fs_copy(self._name, src, dst)

    async def copy_from_host(self, host_path: str | os.PathLike[str], guest_path: str) -> int:
        """Copies a host file or directory tree into the sandbox, streaming file contents.
        Returns the bytes copied."""
        src = Path(host_path)
        try:
            st = src.stat()
        except FileNotFoundError:
            raise FileNotFoundError(f"no such host file or directory: {src}") from None
        if not _stat.S_ISDIR(st.st_mode):
            n: int = await self._c.fs_write_from_file(self._name, str(src), guest_path)
            return n
        total = 0
        await self.mkdir(guest_path, parents=True)
        for root, dirs, files in os.walk(src):
            rel = Path(root).relative_to(src)
            gdir = str(PurePosixPath(guest_path, *rel.parts))
            for d in dirs:
                await self.mkdir(str(PurePosixPath(gdir, d)), parents=True)
            for f in files:
                hp = Path(root, f)
                if hp.is_symlink() and not hp.exists():
                    continue
                total += await self._c.fs_write_from_file(
                    self._name, str(hp), str(PurePosixPath(gdir, f))
                )
        return total

    async def copy_to_host(self, guest_path: str, host_path: str | os.PathLike[str]) -> int:
        """Copies a sandbox file or directory tree to the host, streaming file contents.
        Returns the bytes copied."""
        st = await self.stat(guest_path)
        dst = Path(host_path)
        if st.kind != "dir":
            n: int = await self._c.fs_read_to_file(self._name, guest_path, str(dst))
            return n
        total = 0
        dst.mkdir(parents=True, exist_ok=True)
        for entry in await self.list(guest_path):
            child = str(PurePosixPath(guest_path, entry.name))
            if entry.kind == "dir":
                total += await self.copy_to_host(child, dst / entry.name)
            elif entry.kind == "file":
                total += await self._c.fs_read_to_file(self._name, child, str(dst / entry.name))
        return total


# ---------------------------------------------------------------------------------------------
# Sandbox


class Sandbox:
    """A sandbox on the node agent.

    Create one with :meth:`create` (attached: removed when this process ends) or
    :meth:`create_detached` (survives it), or get a handle on an existing one with :meth:`get`.
    Used with ``async with``, the sandbox is removed when the block ends, whatever happens.
    """

    def __init__(
        self,
        client: _native.Client,
        info: SandboxInfo,
        *,
        lease: _native.Lease | None = None,
    ) -> None:
        self._client = client
        self._info = info
        self._lease = lease
        self._detached_handle = False
        # Cluster mode: the connection and the Sandbox object's name; the agent knows the
        # sandbox as ``_target``.
        self._cluster: _native.Cluster | None = None
        self._object: str | None = None
        self.fs = SandboxFs(self)
        """Filesystem of the sandbox."""

    def __repr__(self) -> str:
        kind = "detached" if self._info.detached else "attached"
        return f"<Sandbox {self.name!r} {self._info.state} {kind} image={self._info.image!r}>"

    @property
    def name(self) -> str:
        """The sandbox's name (in cluster mode, its Sandbox object's)."""
        return self._object or self._info.name

    @property
    def _target(self) -> str:
        """The name the node-agent knows the sandbox by."""
        return self._info.name

    @property
    def info(self) -> SandboxInfo:
        """The sandbox as last seen (see :meth:`refresh`)."""
        return self._info

    @property
    def detached(self) -> bool:
        """Whether the sandbox survives the process that created it."""
        return self._info.detached

    # -- lifecycle ----------------------------------------------------------------------------

    @classmethod
    async def create(
        cls,
        name: str | None = None,
        *,
        image: str,
        memory: int = 512,
        cpus: int = 1,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        isolation: Isolation | None = None,
        pull_policy: PullPolicy = "if-not-present",
        volumes: Mapping[str, Volume] | None = None,
        network: NetworkPolicy | None = None,
        secrets: Iterable[Secret] | None = None,
        patches: Iterable[Patch] | None = None,
        pids_limit: int | None = None,
        cluster: ModeArg = None,
    ) -> Sandbox:
        """Creates and boots a sandbox attached to this process: it is removed when the
        process ends (or when it is stopped, killed or removed).

        Args:
            name: Unique name (DNS label: ``a-z0-9-``, 1-63 chars); generated when omitted.
            image: OCI image, e.g. ``"python"`` or ``"python:3.12-slim"``.
            memory: Memory limit in MiB.
            cpus: Number of CPUs.
            env: Environment of every command.
            workdir: Default working directory of commands.
            isolation: ``"microvm"``, ``"container"``, or None for the node's strongest.
            pull_policy: ``"if-not-present"``, ``"always"`` or ``"never"``.
            patches: Root filesystem changes applied before the sandbox boots
                (:class:`Patch`); host paths of copies must be under the agent's
                ``--host-root`` (``MSB_HOST_ROOTS``).
            volumes: ``{guest path: Volume}``: named volumes (:meth:`Volume.create`), binds
                of host directories under the agent's ``--host-root``, tmpfs (microVMs share
                directories only: a single-file bind is refused there).
            network: What the sandbox may reach (:class:`NetworkPolicy`; default
                :meth:`NetworkPolicy.none`: no network at all), enforced by the node-agent.
            secrets: Credentials used without being held (:meth:`Secret.env`): the sandbox's
                environment gets a placeholder that the node-agent's egress proxy replaces by
                the value only in HTTPS requests to the secret's ``allow_hosts`` (whose names
                then resolve whatever the network policy); other uses are blocked and listed by
                :meth:`secret_violations`. In cluster mode they become Secret objects owned by the
                Sandbox (see :mod:`microsandbox.cluster`).
            pids_limit: Maximum number of processes.
            cluster: A :class:`~microsandbox.cluster.Cluster` to create a Kubernetes Sandbox
                object there, or ``"local"``; default: :func:`~microsandbox.set_mode`, then
                ``MICROSANDBOX_MODE``, else local. In cluster mode "attached" means the
                ``async with`` block or :meth:`destroy` deletes the object; a crashed process
                leaves it (give the object a lifetime with kubectl if that matters).
        """
        return await cls._create(
            name,
            image=image,
            memory=memory,
            cpus=cpus,
            env=env,
            workdir=workdir,
            isolation=isolation,
            pull_policy=pull_policy,
            volumes=volumes,
            network=network,
            secrets=secrets,
            patches=patches,
            pids_limit=pids_limit,
            detached=False,
            cluster=cluster,
        )

    @classmethod
    async def create_detached(
        cls,
        name: str | None = None,
        *,
        image: str,
        memory: int = 512,
        cpus: int = 1,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        isolation: Isolation | None = None,
        pull_policy: PullPolicy = "if-not-present",
        volumes: Mapping[str, Volume] | None = None,
        network: NetworkPolicy | None = None,
        secrets: Iterable[Secret] | None = None,
        patches: Iterable[Patch] | None = None,
        pids_limit: int | None = None,
        cluster: ModeArg = None,
    ) -> Sandbox:
        """Like :meth:`create`, but the sandbox survives this process: it runs until stopped or
        removed (find it again with :meth:`get`)."""
        return await cls._create(
            name,
            image=image,
            memory=memory,
            cpus=cpus,
            env=env,
            workdir=workdir,
            isolation=isolation,
            pull_policy=pull_policy,
            volumes=volumes,
            network=network,
            secrets=secrets,
            patches=patches,
            pids_limit=pids_limit,
            detached=True,
            cluster=cluster,
        )

    @classmethod
    async def _create(
        cls,
        name: str | None,
        *,
        image: str,
        memory: int,
        cpus: int,
        env: Mapping[str, str] | None,
        workdir: str | None,
        isolation: Isolation | None,
        pull_policy: PullPolicy,
        volumes: Mapping[str, Volume] | None,
        network: NetworkPolicy | None,
        secrets: Iterable[Secret] | None,
        patches: Iterable[Patch] | None,
        pids_limit: int | None,
        detached: bool,
        client: _native.Client | None = None,
        cluster: ModeArg = None,
    ) -> Sandbox:
        _check_not_enforced(volumes, network, secrets, patches)
        if name is None:
            name = f"sandbox-{_secrets.token_hex(4)}"
        mode = _cluster.resolve(cluster) if client is None else None
        request = _create_request(
            name,
            image=image,
            memory=memory,
            cpus=cpus,
            env=env,
            workdir=workdir,
            isolation=isolation,
            pull_policy=pull_policy,
            detached=detached,
            pids_limit=pids_limit,
            patches=patches,
            volumes=volumes,
            network=network,
            secrets=secrets,
        )
        if mode is not None:
            return await cls._create_in_cluster(mode, json.loads(request))
        if client is None:
            client = await _agent.get_client()
        info = SandboxInfo._from_dict(await client.create(request))
        lease = None
        try:
            if not detached:
                lease = await client.hold_lease(name)
            if workdir:
                # Like an image's WORKDIR, the directory is created if the image lacks it (the
                # agent does not create it, and every command would fail to start in it).
                await client.fs_mkdir(name, workdir, True)
        except BaseException:
            # An attached sandbox without a lease is removed after the agent's grace time
            # anyway; remove it now, and a half-made detached one too.
            if lease is not None:
                await asyncio.shield(_release_lease(client, name, lease))
            else:
                await asyncio.shield(_remove_quietly(client, name))
            raise
        if lease is None:
            return cls(client, info)
        _leases[name] = lease
        return cls(client, info, lease=lease)

    @classmethod
    async def _create_in_cluster(cls, mode: Cluster, req: dict[str, Any]) -> Sandbox:
        """Posts the Sandbox object, waits for Ready, deletes it again if anything fails."""
        conn = await _cluster.connect(mode)
        name = req["name"]
        obj = _cluster.sandbox_object(
            name,
            conn.namespace,
            image=req["image"],
            memory=req["memory_mib"],
            cpus=req["cpus"],
            env=req["env"],
            workdir=req["workdir"],
            isolation=req["isolation"],
            pull_policy=req["pull_policy"],
            pids_limit=req["pids_limit"],
            patches=req["patches"],
            mounts=req["mounts"],
            network=req["network"],
            secrets=req["secrets"],
        )
        # A name taken by someone else fails here, before this call owns anything.
        created = await conn.create(obj)
        try:
            if req["secrets"]:
                await _cluster.create_secrets(conn, created, req["secrets"])
            ready = await conn.wait_ready(name, mode.ready_timeout)
            sb = await cls._from_cluster_object(mode, conn, ready)
            if req["workdir"]:
                await sb._client.fs_mkdir(sb._target, req["workdir"], True)
        except BaseException:
            # Shielded: a cancelled create still deletes the object it made.
            await asyncio.shield(_delete_object_quietly(conn, name))
            raise
        return sb

    @classmethod
    async def _from_cluster_object(
        cls, mode: _cluster.Cluster, conn: _native.Cluster, obj: dict[str, Any]
    ) -> Sandbox:
        """A handle on a Ready Sandbox object: its node-agent, with the user's token."""
        status = obj.get("status") or {}
        name = obj["metadata"]["name"]
        target = (status.get("agent") or {}).get("sandbox")
        if not target or not (status.get("agentEndpoint") or status.get("agentProxy")):
            raise SandboxNotRunningError(f"Sandbox {name} has no running sandbox on a node yet")
        client = _cluster.agent_client(mode, conn, obj)
        sb = cls(client, SandboxInfo._from_dict(await client.get(target)))
        sb._cluster = conn
        sb._object = name
        return sb

    @classmethod
    async def get(cls, name: str, *, cluster: ModeArg = None) -> Sandbox:
        """A handle on an existing sandbox (raises :class:`SandboxNotFoundError`)."""
        mode = _cluster.resolve(cluster)
        if mode is not None:
            conn = await _cluster.connect(mode)
            return await cls._from_cluster_object(mode, conn, await conn.get(name))
        client = await _agent.get_client()
        return cls(client, SandboxInfo._from_dict(await client.get(name)))

    @classmethod
    async def list(cls, *, cluster: ModeArg = None) -> builtins.list[SandboxInfo]:
        """Every sandbox of the node (local mode) or the namespace's Ready ones (cluster mode)."""
        mode = _cluster.resolve(cluster)
        if mode is not None:
            conn = await _cluster.connect(mode)
            out = []
            for obj in await conn.list():
                status = obj.get("status") or {}
                if (status.get("agent") or {}).get("sandbox"):
                    try:
                        out.append((await cls._from_cluster_object(mode, conn, obj)).info)
                    except (SandboxNotFoundError, SandboxNotRunningError):
                        continue
            return out
        client = await _agent.get_client()
        return [SandboxInfo._from_dict(d) for d in await client.list()]

    @classmethod
    async def remove(cls, name: str, *, cluster: ModeArg = None) -> None:
        """Removes a sandbox (killed first if running) and everything it stored. In cluster mode
        deletes its Sandbox object and waits until the node-agent removed it."""
        mode = _cluster.resolve(cluster)
        if mode is not None:
            await (await _cluster.connect(mode)).delete(name, True, 60.0)
            return
        client = await _agent.get_client()
        lease = _leases.pop(name, None)
        if lease is not None:
            await _release_lease(client, name, lease)
        else:
            await client.remove(name)

    async def refresh(self) -> SandboxInfo:
        """Fetches the sandbox's current state."""
        self._info = SandboxInfo._from_dict(await self._client.get(self._target))
        return self._info

    async def _release(self) -> None:
        """Lets go of an attached sandbox: closes its lease, which makes the agent remove it."""
        lease = self._lease
        if lease is None:
            return
        self._lease = None
        if _leases.get(self.name) is lease:
            del _leases[self.name]
        await _release_lease(self._client, self.name, lease)

    async def _delete_object(self) -> SandboxInfo:
        """Cluster mode: delete the Sandbox object and wait until the node-agent removed it."""
        assert self._cluster is not None and self._object is not None
        await self._cluster.delete(self._object, True, 60.0)
        self._info = dataclasses.replace(self._info, state="stopped")
        return self._info

    async def stop(self, timeout: float | None = None) -> SandboxInfo:
        """Stops the sandbox: SIGTERM, then SIGKILL after ``timeout`` seconds (default 10).
        An attached sandbox is then removed (nothing can restart it). In cluster mode the
        Sandbox object is deleted (lifecycle belongs to the object)."""
        if self._cluster is not None:
            return await self._delete_object()
        self._info = SandboxInfo._from_dict(
            await self._client.stop(self._target, _timeout_ms(timeout))
        )
        await self._release()
        return self._info

    async def kill(self) -> SandboxInfo:
        """Kills the sandbox now (SIGKILL). An attached sandbox is then removed."""
        if self._cluster is not None:
            return await self._delete_object()
        self._info = SandboxInfo._from_dict(await self._client.kill(self._target))
        await self._release()
        return self._info

    async def drain(self, timeout: float | None = None) -> SandboxInfo:
        """Refuses new commands, waits for running ones (at most ``timeout`` seconds), then
        stops. An attached sandbox is then removed."""
        if self._cluster is not None:
            return await self._delete_object()
        self._info = SandboxInfo._from_dict(
            await self._client.drain(self._target, _timeout_ms(timeout))
        )
        await self._release()
        return self._info

    async def destroy(self) -> None:
        """Removes the sandbox (killed first if running); no error if it is already gone."""
        if self._cluster is not None:
            await self._delete_object()
            return
        if self._lease is not None:
            await self._release()
        else:
            await _remove_quietly(self._client, self._target)

    def detach(self) -> None:
        """Lets the sandbox outlive this handle: ``async with`` no longer removes it.

        Only for detached sandboxes (:meth:`create_detached`, or handles from :meth:`get`): an
        attached sandbox is bound to its creator's lease, and the agent cannot hand it over yet.
        """
        if self._lease is not None:
            raise UnsupportedFeatureError(
                "the node agent cannot turn an attached sandbox into a detached one yet; "
                "create it with Sandbox.create_detached() to let it outlive this process"
            )
        self._detached_handle = True

    async def __aenter__(self) -> Sandbox:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._detached_handle:
            return
        # Shielded: a cancelled task still removes its sandbox.
        await asyncio.shield(self.destroy())

    # -- execution ----------------------------------------------------------------------------

    async def exec(
        self,
        command: str,
        args: Sequence[str] | None = None,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        rlimits: RlimitsArg = None,
        user: str | None = None,
        stdin: bytes | str | None = None,
    ) -> ExecOutput:
        """Runs a command to completion and returns its collected output.

        Args:
            command: Executable (looked up in ``PATH``) or absolute path.
            args: Its arguments.
            cwd: Working directory (default: the sandbox's ``workdir``).
            env: Extra environment variables.
            timeout: Seconds before the command is killed (then ``output.timed_out``).
            rlimits: Resource limits, e.g. ``{"nofile": 256}``.
            user: User to run as (name or uid).
            stdin: Bytes fed to stdin (then closed).

        For large or incremental output use :meth:`exec_stream`.
        """
        req = _exec_request(
            command,
            args,
            cwd=cwd,
            env=env,
            timeout=timeout,
            rlimits=rlimits,
            user=user,
            stdin_data=stdin,
        )
        return _output(await self._client.exec(self._target, req))

    async def shell(
        self,
        script: str,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        rlimits: RlimitsArg = None,
        user: str | None = None,
        stdin: bytes | str | None = None,
    ) -> ExecOutput:
        """Runs a shell script with ``/bin/sh -c`` (options as :meth:`exec`)."""
        return await self.exec(
            "/bin/sh",
            ["-c", script],
            cwd=cwd,
            env=env,
            timeout=timeout,
            rlimits=rlimits,
            user=user,
            stdin=stdin,
        )

    async def exec_stream(
        self,
        command: str,
        args: Sequence[str] | None = None,
        *,
        stdin_pipe: bool = False,
        tty: TtyArg = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        rlimits: RlimitsArg = None,
        user: str | None = None,
    ) -> ExecHandle:
        """Starts a command and returns a handle streaming its events as they happen.

        Args:
            stdin_pipe: Keep stdin open for :meth:`ExecHandle.write_stdin`.
            tty: Run in a pseudo-terminal: ``True`` (24x80) or ``(rows, cols)``.
            Others: as :meth:`exec`.
        """
        req = _exec_request(
            command,
            args,
            cwd=cwd,
            env=env,
            timeout=timeout,
            rlimits=rlimits,
            user=user,
            stdin_pipe=stdin_pipe,
            tty=tty,
        )
        stream = await self._client.exec_stream(self._target, req)
        return ExecHandle(stream, stdin_pipe=stdin_pipe, tty=bool(tty))

    async def attach(
        self,
        command: str = "/bin/sh",
        args: Sequence[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> int:
        """Runs an interactive command on this terminal (stdin, stdout, window size) until it
        exits; returns its exit code. Needs a real terminal on stdin."""
        from ._attach import attach_terminal

        return await attach_terminal(self, command, args, env=env, cwd=cwd)

    # -- metrics --------------------------------------------------------------------------------

    async def metrics(self) -> Metrics:
        """Current resource usage."""
        return Metrics._from_dict(await self._client.metrics(self._target))

    async def secret_violations(self) -> builtins.list[SecretViolation]:
        """Requests from the sandbox that carried a secret's placeholder to a host not on its
        ``allow_hosts`` (or over plain HTTP) and were blocked by the node-agent, oldest first."""
        return [
            SecretViolation._from_dict(d)
            for d in await self._client.secret_violations(self._target)
        ]


async def _delete_object_quietly(conn: _native.Cluster, name: str) -> None:
    """Deletes a Sandbox object this call created, without waiting; errors are swallowed (the
    caller is already failing)."""
    with contextlib.suppress(Exception):
        await conn.delete(name, False, 0.0)


async def _remove_quietly(client: _native.Client, name: str) -> None:
    try:
        await client.remove(name)
    except SandboxNotFoundError:
        pass


async def _release_lease(client: _native.Client, name: str, lease: _native.Lease) -> None:
    """Closes the lease of an attached sandbox and waits until the agent removed it.

    The lease is closed first and the agent left to remove the sandbox: removing it ourselves
    and then closing the lease would make the agent's deferred removal run after it, and hit a
    new sandbox created meanwhile under the same name.
    """
    await lease.release()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _LEASE_REMOVAL_WAIT
    while loop.time() < deadline:
        try:
            await client.get(name)
        except SandboxNotFoundError:
            return
        await asyncio.sleep(0.02)
    await _remove_quietly(client, name)


# How long the agent gets to remove an attached sandbox once its lease is closed.
_LEASE_REMOVAL_WAIT = 10.0


async def all_sandbox_metrics() -> list[Metrics]:
    """Resource usage of every running sandbox of the node."""
    client = await _agent.get_client()
    return [Metrics._from_dict(d) for d in await client.all_metrics()]


async def pull_image(image: str, pull_policy: PullPolicy = "always") -> str:
    """Pulls an image into the agent's store ahead of time (``"always"`` asks the registry even
    if the image is present); returns its digest."""
    policy = str(pull_policy).replace("_", "-").lower()
    if policy not in ("always", "if-not-present", "never"):
        raise InvalidConfigError(
            f"pull_policy must be 'always', 'if-not-present' or 'never', not {pull_policy!r}"
        )
    client = await _agent.get_client()
    digest: str = await client.pull(image, policy)
    return digest
