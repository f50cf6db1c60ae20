"""Values the SDK returns: sandbox info, exec output and events, metrics, file metadata."""

from __future__ import annotations

import builtins
import datetime as _dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from .errors import CommandFailedError, InvalidConfigError, SecretViolationError

if TYPE_CHECKING:
    from .cluster import ModeArg

__all__ = [
    "Isolation",
    "PullPolicy",
    "SandboxState",
    "SandboxInfo",
    "Snapshot",
    "ExecOutput",
    "StartedEvent",
    "StdoutEvent",
    "StderrEvent",
    "ExitedEvent",
    "ExecEvent",
    "Rlimit",
    "Metrics",
    "SecretViolation",
    "FileStat",
    "AgentInfo",
]

Isolation: TypeAlias = Literal["microvm", "container"]
"""``"microvm"`` (hardware-isolated, libkrun) or ``"container"`` (namespaces + seccomp, crun)."""

PullPolicy: TypeAlias = Literal["always", "if-not-present", "never"]
"""When the agent contacts the registry for a sandbox's image."""

SandboxState: TypeAlias = Literal[
    "creating", "running", "paused", "suspended", "draining", "stopped", "failed"
]


@dataclass(frozen=True)
class SandboxInfo:
    """A sandbox as the node agent reports it."""

    name: str
    image: str
    image_digest: str
    isolation: Isolation
    state: SandboxState
    memory_mib: int
    cpus: int
    detached: bool
    created_at: int
    """Seconds since the Unix epoch."""
    reason: str | None = None
    """Why the sandbox failed or stopped, when known (e.g. ``"oom-killed"``)."""
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    """Its labels (``microsandbox.dev/launch``: ``"warm"`` when a warm pool served it)."""

    @property
    def running(self) -> bool:
        """Whether the sandbox is running (and accepts commands)."""
        return self.state == "running"

    @property
    def created(self) -> _dt.datetime:
        """Creation time as an aware datetime (UTC)."""
        return _dt.datetime.fromtimestamp(self.created_at, tz=_dt.timezone.utc)

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> SandboxInfo:
        return cls(
            name=d["name"],
            image=d["image"],
            image_digest=d["image_digest"],
            isolation=d["isolation"],
            state=d["state"],
            memory_mib=d["memory_mib"],
            cpus=d["cpus"],
            detached=d["detached"],
            created_at=d["created_at"],
            reason=d.get("reason"),
            labels=dict(d.get("labels") or {}),
        )


@dataclass(frozen=True)
class ExecOutput:
    """Result of a finished command.

    ``stdout()`` / ``stderr()`` decode the output as UTF-8 (invalid bytes replaced);
    ``stdout_bytes`` / ``stderr_bytes`` are the raw bytes.
    """

    exit_code: int
    """Exit status (by convention 128 + signal when a signal killed the process)."""
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""
    signal: int | None = None
    """Signal that killed the process, if one did."""
    timed_out: bool = False
    """Whether the exec's ``timeout`` expired (the process was then killed)."""
    secret_violations: tuple[SecretViolation, ...] = ()
    """Uses of secret placeholders the node-agent blocked while the command ran (requests to
    hosts outside a secret's ``allow_hosts``, or over plain HTTP); :meth:`check` raises
    :class:`SecretViolationError` for them."""

    def stdout(self, encoding: str = "utf-8") -> str:
        """Standard output as text."""
        return self.stdout_bytes.decode(encoding, errors="replace")

    @property
    def stdout_text(self) -> str:
        """Standard output as UTF-8 text (as :meth:`stdout`)."""
        return self.stdout()

    @property
    def stderr_text(self) -> str:
        """Standard error as UTF-8 text (as :meth:`stderr`)."""
        return self.stderr()

    def stderr(self, encoding: str = "utf-8") -> str:
        """Standard error as text."""
        return self.stderr_bytes.decode(encoding, errors="replace")

    @property
    def success(self) -> bool:
        """Exited on its own with status 0."""
        return self.exit_code == 0 and self.signal is None and not self.timed_out

    def check(self) -> ExecOutput:
        """Returns self if the command succeeded and sent no secret where it may not go;
        raises ``SecretViolationError`` (first) or ``CommandFailedError`` otherwise."""
        if self.secret_violations:
            listed = ", ".join(f"{v.secret} -> {v.host}" for v in self.secret_violations)
            raise SecretViolationError(
                f"the command sent secrets where they may not go (blocked): {listed}",
                self.secret_violations,
                self,
            )
        if not self.success:
            raise CommandFailedError(self)
        return self


@dataclass(frozen=True)
class StartedEvent:
    """The process started (always the first event)."""

    pid: int


@dataclass(frozen=True)
class StdoutEvent:
    """A chunk of standard output (with a tty: of the terminal)."""

    data: bytes


@dataclass(frozen=True)
class StderrEvent:
    """A chunk of standard error."""

    data: bytes


@dataclass(frozen=True)
class ExitedEvent:
    """The process ended (always the last event)."""

    code: int
    signal: int | None = None
    timed_out: bool = False

    @property
    def success(self) -> bool:
        return self.code == 0 and self.signal is None and not self.timed_out


ExecEvent: TypeAlias = StartedEvent | StdoutEvent | StderrEvent | ExitedEvent
"""What :meth:`ExecHandle.events` yields; use ``match``::

    match event:
        case StdoutEvent(data=data): ...
        case ExitedEvent(code=code): ...
"""


@dataclass(frozen=True)
class Rlimit:
    """A resource limit for a command, e.g. ``Rlimit("nofile", 64, 64)``.

    ``resource`` is the name without ``RLIMIT_``, lowercase: ``nofile``, ``nproc``, ``as``,
    ``cpu``, ``fsize``, ``stack``, ``core``, ``memlock``...
    """

    resource: str
    soft: int
    hard: int | None = None
    """Defaults to ``soft``."""

    def _to_dict(self) -> dict[str, Any]:
        return {
            "resource": self.resource.lower().removeprefix("rlimit_"),
            "soft": self.soft,
            "hard": self.soft if self.hard is None else self.hard,
        }


@dataclass(frozen=True)
class SecretViolation:
    """A request carrying a secret's placeholder that the node-agent blocked: the host was not
    on the secret's ``allow_hosts``, or the request was plain HTTP."""

    secret: str
    """The secret's environment variable."""
    host: str
    reason: str
    at: int
    """Seconds since the Unix epoch."""

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> SecretViolation:
        return cls(secret=d["secret"], host=d["host"], reason=d["reason"], at=d["at"])


@dataclass(frozen=True)
class Metrics:
    """Resource usage of a sandbox."""

    name: str
    cpu_usage_us: int
    """CPU time used, in microseconds."""
    memory_bytes: int
    memory_limit_bytes: int | None
    disk_read_bytes: int
    disk_write_bytes: int
    net_rx_bytes: int
    net_tx_bytes: int
    processes: int

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_usage_us / 1_000_000

    @property
    def memory_mib(self) -> float:
        return self.memory_bytes / (1024 * 1024)

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> Metrics:
        return cls(
            name=d["name"],
            cpu_usage_us=d["cpu_usage_us"],
            memory_bytes=d["memory_bytes"],
            memory_limit_bytes=d.get("memory_limit_bytes"),
            disk_read_bytes=d["disk_read_bytes"],
            disk_write_bytes=d["disk_write_bytes"],
            net_rx_bytes=d["net_rx_bytes"],
            net_tx_bytes=d["net_tx_bytes"],
            processes=d["processes"],
        )


@dataclass(frozen=True)
class FileStat:
    """Metadata of a path inside a sandbox."""

    path: str
    kind: str
    """``"file"``, ``"dir"``, ``"symlink"`` or ``"other"``."""
    size: int
    mode: int
    """Permission bits (e.g. ``0o644``)."""
    mtime: int
    """Modification time, seconds since the Unix epoch."""

    @property
    def name(self) -> str:
        """Last component of the path."""
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def is_file(self) -> bool:
        return self.kind == "file"

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"

    @property
    def is_symlink(self) -> bool:
        return self.kind == "symlink"

    @property
    def modified(self) -> float:
        """:attr:`mtime` under the upstream SDK's name."""
        return float(self.mtime)

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> FileStat:
        return cls(
            path=d["path"],
            kind=d["kind"],
            size=d["size"],
            mode=d["mode"],
            mtime=d["mtime"],
        )


@dataclass(frozen=True)
class AgentInfo:
    """What the node agent says about itself."""

    version: str
    node: str
    isolation: tuple[str, ...]
    """Isolation levels this node provides, strongest first."""
    sandboxes: int

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> AgentInfo:
        return cls(
            version=d["version"],
            node=d["node"],
            isolation=tuple(d["isolation"]),
            sandboxes=d["sandboxes"],
        )


@dataclass(frozen=True)
class Snapshot:
    """A sandbox's files saved on its node (:meth:`Sandbox.snapshot`): create sandboxes from it
    with ``Sandbox.create(image=snapshot.image)``."""

    name: str
    #: The image reference of the snapshot (``microsandbox.local/snapshots/NAME:latest``; in
    #: cluster mode ``snapshot://NAME``).
    image: str
    #: Digest of its content (layers and config).
    digest: str
    #: Number of layers: the sandbox image's, then the snapshot's own.
    layers: int

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> Snapshot:
        return cls(name=d["name"], image=d["image"], digest=d["digest"], layers=d["layers"])

    @staticmethod
    async def list(*, cluster: ModeArg = None) -> builtins.list[Snapshot]:
        """The snapshots of this machine's node-agent, or (cluster mode) the namespace's taken
        SandboxSnapshots."""
        from . import _agent
        from . import cluster as _cluster

        mode = _cluster.resolve(cluster)
        if mode is not None:
            conn = await _cluster.connect(mode)
            return [Snapshot._from_dict(d) for d in await conn.snapshots()]
        client = await _agent.get_client()
        return [Snapshot._from_dict(d) for d in await client.snapshot_list()]

    @staticmethod
    async def remove(name: str, *, cluster: ModeArg = None) -> None:
        """Deletes a snapshot (refused while a sandbox made from it exists). In cluster mode
        deletes the SandboxSnapshot object; its node removes the files once no sandbox made from
        it exists."""
        from . import _agent
        from . import cluster as _cluster

        mode = _cluster.resolve(cluster)
        if mode is not None:
            await (await _cluster.connect(mode)).delete_snapshot(name)
            return
        client = await _agent.get_client()
        await client.snapshot_remove(name)

    @staticmethod
    async def push(
        name: str,
        reference: str,
        *,
        cluster: ModeArg = None,
        secret: str | None = None,
    ) -> str:
        """Pushes snapshot ``name`` of this machine's node-agent to a registry as image
        ``reference`` (with the agent's registry credentials) and returns the pushed reference:
        ``Sandbox.create(image=...)`` with it starts from the snapshot on any machine that can
        pull it. In cluster mode pushes the SandboxSnapshot (``spec.push``) with the credentials
        of ``secret``, a docker-config Secret of the namespace (``kubectl create secret
        docker-registry``), which the operator seals to the snapshot's node; waits until it is
        pushed."""
        from . import _agent
        from . import cluster as _cluster

        mode = _cluster.resolve(cluster)
        if mode is not None:
            conn = await _cluster.connect(mode)
            done = await conn.push_snapshot(name, reference, secret)
            return str(done["reference"])
        if secret is not None:
            raise InvalidConfigError(
                "secret= names a Kubernetes Secret: it applies in cluster mode only (a local "
                "push uses the agent's --registry-auth)"
            )
        client = await _agent.get_client()
        pushed = await client.snapshot_push(name, reference)
        return str(pushed["reference"])
