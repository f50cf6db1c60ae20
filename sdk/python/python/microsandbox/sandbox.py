"""Sandboxes: lifecycle, command execution (collected and streamed), filesystem, metrics.

The streamed command's handle (:class:`ExecHandle`) and the filesystem (:class:`SandboxFs`) live
in ``_exec`` and ``_fs``, the request builders in ``_requests``; importing them from here works.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import secrets as _secrets
from collections.abc import Generator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from . import _agent, _native
from . import cluster as _cluster
from ._exec import ExecHandle, _output
from ._fs import SandboxFs
from ._requests import (
    RlimitsArg,
    TtyArg,
    _create_request as _create_request,  # re-exported: tests build requests from here
    _exec_request as _exec_request,
    _pull_policy,
    _timeout_ms,
)
from .cluster import Cluster, ModeArg
from .config import NetworkPolicy, Patch, Secret, Volume, _check_not_enforced
from .errors import (
    ExecTimeoutError,
    InvalidConfigError,
    SandboxNotFoundError,
    UnsupportedFeatureError,
)
from .models import (
    ExecOutput,
    Isolation,
    Metrics,
    PullPolicy,
    SandboxInfo,
    SecretViolation,
    Snapshot,
)

__all__ = ["Sandbox", "SandboxFs", "ExecHandle", "all_sandbox_metrics", "pull_image"]

# Leases of the attached sandboxes this process created: kept here, not only on the handle, so
# a sandbox lives as long as the process (or until stopped/removed), not as long as the handle.
_leases: dict[str, _native.Lease] = {}


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
        idle_timeout: float | None = None,
        pool: str | None = None,
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
                (:class:`Patch`). Host paths of copies and binds: any path you can read
                with the agent the SDK starts (``--local``), else under the agent's
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
            idle_timeout: Seconds without a command or file operation after which the
                sandbox is suspended (frozen: state ``"suspended"``, memory kept, no CPU); the
                next command resumes it transparently. ``None``: never suspended.
            pool: Take a pre-started sandbox of this warm pool (:class:`Pool`) when the
                request matches its template (all but name, env, workdir and the idle
                timeout); otherwise boot one. Its ``labels["microsandbox.dev/launch"]`` says
                ``"warm"`` or ``"cold"``. In cluster mode: a ``SandboxClaim`` of that
                ``SandboxWarmPool``, whose ``SandboxTemplate`` decides everything but the name and
                ``env`` (env makes the operator boot one for the claim, if the template allows
                it); removing the sandbox deletes the claim.
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
            idle_timeout=idle_timeout,
            pool=pool,
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
        idle_timeout: float | None = None,
        pool: str | None = None,
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
            idle_timeout=idle_timeout,
            pool=pool,
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
        idle_timeout: float | None = None,
        pool: str | None = None,
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
            idle_timeout=idle_timeout,
            pool=pool,
            patches=patches,
            volumes=volumes,
            network=network,
            secrets=secrets,
        )
        if mode is not None:
            return await cls._create_in_cluster(mode, request)
        if client is None:
            client = await _agent.get_client()
        info = SandboxInfo._from_dict(await client.create(request))
        lease = None
        try:
            if not detached:
                lease = await client.hold_lease(name)
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
    async def _create_in_cluster(cls, mode: Cluster, request: str) -> Sandbox:
        """Posts the Sandbox object and waits for Ready; the Rust core deletes it again if
        anything fails or this is cancelled."""
        conn = await _cluster.connect(mode)
        obj, client, info = await conn.create_sandbox(request)
        return cls._in_cluster(conn, obj, client, info)

    @classmethod
    def _in_cluster(
        cls, conn: _native.Cluster, obj: dict[str, Any], client: _native.Client, info: Any
    ) -> Sandbox:
        """A handle on a running Sandbox object."""
        sb = cls(client, SandboxInfo._from_dict(info))
        sb._cluster = conn
        sb._object = obj["metadata"]["name"]
        return sb

    @classmethod
    async def get(cls, name: str, *, cluster: ModeArg = None) -> Sandbox:
        """A handle on an existing sandbox (raises :class:`SandboxNotFoundError`)."""
        mode = _cluster.resolve(cluster)
        if mode is not None:
            conn = await _cluster.connect(mode)
            return cls._in_cluster(conn, *await conn.sandbox(name))
        client = await _agent.get_client()
        return cls(client, SandboxInfo._from_dict(await client.get(name)))

    @classmethod
    async def list(cls, *, cluster: ModeArg = None) -> builtins.list[SandboxInfo]:
        """Every sandbox of the node (local mode) or the namespace's Ready ones (cluster mode)."""
        mode = _cluster.resolve(cluster)
        if mode is not None:
            conn = await _cluster.connect(mode)
            return [SandboxInfo._from_dict(d) for d in await conn.list_sandboxes()]
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
        It stays listed as ``stopped`` until removed (:meth:`remove`, :meth:`destroy`, the end
        of ``async with``); an attached sandbox is also removed when this process ends. In
        cluster mode the Sandbox object is deleted (lifecycle belongs to the object)."""
        if self._cluster is not None:
            return await self._delete_object()
        self._info = SandboxInfo._from_dict(
            await self._client.stop(self._target, _timeout_ms(timeout))
        )
        return self._info

    async def kill(self) -> SandboxInfo:
        """Kills the sandbox now (SIGKILL). It stays listed until removed, as after :meth:`stop`."""
        if self._cluster is not None:
            return await self._delete_object()
        self._info = SandboxInfo._from_dict(await self._client.kill(self._target))
        return self._info

    async def start(self) -> SandboxInfo:
        """Starts a stopped (or failed) sandbox again: the same image, resources and settings,
        its files as the stop left them (the create's patches are not applied again). A running
        one is left as it is. A sandbox created with secrets cannot be started again (their
        values are not kept once it stops): :class:`InvalidConfigError`. In cluster mode a
        stopped sandbox is gone with its object: :class:`UnsupportedFeatureError`."""
        if self._cluster is not None:
            raise UnsupportedFeatureError(
                "in cluster mode stop() deletes the Sandbox object; create it again"
            )
        self._info = SandboxInfo._from_dict(await self._client.start(self._target))
        return self._info

    async def pause(self) -> SandboxInfo:
        """Freezes every process of the sandbox (containers: the cgroup freezer; microVMs: the
        VMM with its vCPUs). Its memory stays allocated, its CPU use drops to zero; commands and
        file operations are refused (:class:`SandboxNotRunningError`, state ``paused``) until
        :meth:`resume`. In cluster mode this sets ``spec.paused`` and waits for the node-agent."""
        return await self._set_paused(True)

    async def resume(self) -> SandboxInfo:
        """Thaws a paused (or idle-suspended) sandbox: its processes go on where they were."""
        return await self._set_paused(False)

    async def snapshot(self, name: str) -> Snapshot:
        """Saves the sandbox's files as snapshot ``name`` on its node (replacing one of that
        name): the image's files plus every change made in the sandbox, deletions included.
        New sandboxes start from it with ``image=snapshot.image``.

        Local mode: pause or stop the sandbox first (:class:`InvalidConfigError` otherwise).
        Cluster mode: a SandboxSnapshot object, taken by the node-agent (a running sandbox is
        paused for the copy and resumed); ``image`` is ``snapshot://NAME`` and a sandbox created
        with it runs on the snapshot's node."""
        if self._cluster is not None:
            assert self._object is not None
            return Snapshot._from_dict(await self._cluster.snapshot(self._object, name))
        return Snapshot._from_dict(await self._client.snapshot(self._target, name))

    async def _set_paused(self, paused: bool) -> SandboxInfo:
        if self._cluster is not None:
            assert self._object is not None
            await self._cluster.set_paused(self._object, paused)
            info = await self._client.get(self._target)
        elif paused:
            info = await self._client.pause(self._target)
        else:
            info = await self._client.resume(self._target)
        self._info = SandboxInfo._from_dict(info)
        return self._info

    async def drain(self, timeout: float | None = None) -> SandboxInfo:
        """Refuses new commands, waits for running ones (at most ``timeout`` seconds), then
        stops. It stays listed until removed, as after :meth:`stop`."""
        if self._cluster is not None:
            return await self._delete_object()
        self._info = SandboxInfo._from_dict(
            await self._client.drain(self._target, _timeout_ms(timeout))
        )
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

    def detach(self) -> _Done:
        """Lets the sandbox outlive this handle: ``async with`` no longer removes it.

        Takes effect at once; the result may also be awaited (``await sb.detach()``, as in the
        upstream SDK). Only for detached sandboxes (:meth:`create_detached`, or handles from
        :meth:`get`): an attached sandbox is bound to its creator's lease, and the agent cannot
        hand it over yet.
        """
        if self._lease is not None:
            raise UnsupportedFeatureError(
                "the node agent cannot turn an attached sandbox into a detached one yet; "
                "create it with Sandbox.create_detached() to let it outlive this process"
            )
        self._detached_handle = True
        return _Done()

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
        cmd: str,
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
            cmd: Executable (looked up in ``PATH``) or absolute path.
            args: Its arguments.
            cwd: Working directory (default: the sandbox's ``workdir``).
            env: Extra environment variables.
            timeout: Seconds before the command is killed; then :class:`ExecTimeoutError` is
                raised, its ``output`` holding what the command wrote until then.
            rlimits: Resource limits, e.g. ``{"nofile": 256}``.
            user: User to run as (name or uid).
            stdin: Bytes fed to stdin (then closed).

        For large or incremental output use :meth:`exec_stream`.
        """
        req = _exec_request(
            cmd,
            args,
            cwd=cwd,
            env=env,
            timeout=timeout,
            rlimits=rlimits,
            user=user,
            stdin_data=stdin,
        )
        out = _output(await self._client.exec(self._target, req))
        if out.timed_out:
            raise ExecTimeoutError.killed(out, timeout)
        return out

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
        cmd: str,
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
            cmd,
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

    async def logs(self, tail_bytes: int | None = None) -> str:
        """The sandbox's own output: a microVM's console (kernel and init), a container's init
        log; at most the last ``tail_bytes`` bytes. Kept across a stop until the next start."""
        if tail_bytes is not None and (isinstance(tail_bytes, bool) or tail_bytes < 0):
            raise InvalidConfigError(f"tail_bytes must be >= 0, not {tail_bytes!r}")
        data = await self._client.logs(self._target, tail_bytes)
        return data.decode("utf-8", errors="replace")

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


class _Done:
    """A call that already took effect, awaitable for callers who ``await`` it."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # pragma: no cover - makes this a generator

    def __repr__(self) -> str:
        return "<done>"


async def all_sandbox_metrics() -> dict[str, Metrics]:
    """Resource usage of every running sandbox of the node, by sandbox name."""
    client = await _agent.get_client()
    return {m.name: m for m in (Metrics._from_dict(d) for d in await client.all_metrics())}


async def pull_image(image: str, pull_policy: PullPolicy = "always") -> str:
    """Pulls an image into the agent's store ahead of time (``"always"`` asks the registry even
    if the image is present); returns its digest."""
    policy = _pull_policy(pull_policy)
    client = await _agent.get_client()
    digest: str = await client.pull(image, policy)
    return digest
