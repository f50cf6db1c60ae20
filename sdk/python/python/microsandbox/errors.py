"""Exceptions of the microsandbox SDK.

Every exception the SDK raises derives from :class:`MicrosandboxError`. Errors the node agent
reports carry its machine-readable ``code`` (``"sandbox_not_found"``...) and its ``message``;
the exception's text adds what to do about it.

Where it helps, an exception also derives from the matching built-in so generic handlers work:
``InvalidConfigError`` is a ``ValueError``, ``FilesystemPathNotFoundError`` a
``FileNotFoundError``, ``ExecTimeoutError`` a ``TimeoutError``, ``UnsupportedFeatureError`` a
``NotImplementedError`` and ``AgentUnreachableError`` a ``ConnectionError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import ExecOutput, SecretViolation

__all__ = [
    "MicrosandboxError",
    "AgentError",
    "AgentUnreachableError",
    "AgentNotInstalledError",
    "AgentConnectionError",
    "ProtocolError",
    "UnauthorizedError",
    "InvalidConfigError",
    "InvalidNameError",
    "UnsupportedFeatureError",
    "NetworkPolicyError",
    "SecretViolationError",
    "SandboxNotFoundError",
    "SandboxAlreadyExistsError",
    "SandboxNotRunningError",
    "SandboxDrainingError",
    "IsolationUnavailableError",
    "ImageError",
    "ImageNotFoundError",
    "ImagePullError",
    "RegistryUnreachableError",
    "ImageNotPresentError",
    "FilesystemError",
    "FilesystemPathNotFoundError",
    "ExecFailedError",
    "CommandNotFoundError",
    "ExecTimeoutError",
    "CommandFailedError",
    "SandboxRuntimeError",
    "GuestBootError",
    "InternalAgentError",
    "PermissionDeniedError",
    "PatchFailedError",
    "VolumeNotFoundError",
    "VolumeAlreadyExistsError",
    "VolumeInUseError",
    "SnapshotInUseError",
    "PoolNotFoundError",
    "NoSpaceError",
    "ClusterError",
    "ClusterConfigError",
    "SchedulingError",
    "SandboxStartTimeoutError",
    "SandboxFailedError",
    # upstream's names
    "PathNotFoundError",
    "ImagePullFailedError",
    "UnsupportedError",
]


class MicrosandboxError(Exception):
    """Base class of every error raised by the microsandbox SDK.

    Attributes:
        code: The node agent's error code (``"sandbox_not_found"``...) when the agent reported
            the error, else ``None``.
        message: The error message without the added advice.
    """

    code: str | None
    message: str

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None) -> None:
        self.code = code
        self.message = message
        text = message if not hint else f"{message} ({hint})"
        super().__init__(text)


class AgentError(MicrosandboxError):
    """Talking to the node agent failed (it is down, unreachable, or answered nonsense)."""


class AgentUnreachableError(AgentError, ConnectionError):
    """No node agent answers at the expected socket or address, and none could be started."""


class AgentNotInstalledError(AgentUnreachableError):
    """No ``microsandbox-agent`` binary was found to start a local agent."""


class AgentConnectionError(AgentError):
    """The connection to the agent broke during a call (the agent may have stopped)."""


class ProtocolError(AgentError):
    """The agent's answer did not follow the API (version mismatch between SDK and agent?)."""


class UnauthorizedError(AgentError):
    """The agent refused the token (another agent's ``agent.token``, or a wrong
    ``MSB_AGENT_TOKEN``)."""


class InvalidConfigError(MicrosandboxError, ValueError):
    """A request was invalid: bad option values, or options the agent cannot apply."""


class InvalidNameError(InvalidConfigError):
    """A sandbox name is not a DNS-1123 label (1-63 of ``a-z``, ``0-9``, ``-``)."""


class UnsupportedFeatureError(InvalidConfigError, NotImplementedError):
    """The option is part of the SDK's API, but the node agent does not enforce it yet.

    Raised instead of silently ignoring it (a sandbox that quietly lacks a volume, a network
    restriction or a secret is worse than no sandbox).
    """


class NetworkPolicyError(InvalidConfigError):
    """A network policy is malformed or cannot be applied."""


class SecretViolationError(MicrosandboxError):
    """A secret's placeholder was sent to a host outside its ``allow_hosts`` (or over plain
    HTTP) and the node-agent blocked it. Raised by :meth:`ExecOutput.check` when the command
    triggered that.

    Attributes:
        violations: The :class:`SecretViolation` records (empty when raised otherwise).
        output: The command's :class:`ExecOutput`, when raised by ``check()``.
    """

    violations: tuple[SecretViolation, ...]
    output: ExecOutput | None

    def __init__(
        self,
        message: str,
        violations: tuple[SecretViolation, ...] = (),
        output: ExecOutput | None = None,
    ) -> None:
        super().__init__(message)
        self.violations = violations
        self.output = output


class SandboxNotFoundError(MicrosandboxError, LookupError):
    """No sandbox of that name exists on the agent."""


class SandboxAlreadyExistsError(MicrosandboxError):
    """A sandbox of that name already exists."""


class SandboxNotRunningError(MicrosandboxError, RuntimeError):
    """The sandbox exists but is not running (stopped, failed or still starting).

    A ``RuntimeError`` too, as the earlier SDK raised for a sandbox not started."""


class SandboxDrainingError(SandboxNotRunningError):
    """The sandbox is draining: it refuses new commands and stops once running ones end."""


class IsolationUnavailableError(MicrosandboxError):
    """The requested isolation (microvm, container) is not available on this node."""


class ImageError(MicrosandboxError):
    """Base class of image errors."""


class ImageNotFoundError(ImageError):
    """The registry does not have that image (or tag)."""


class ImagePullError(ImageError):
    """Pulling the image failed."""


class RegistryUnreachableError(ImagePullError):
    """The image registry (or its mirror) could not be reached."""


class ImageNotPresentError(ImageError):
    """``pull_policy="never"`` and the image is not in the agent's local store."""


class FilesystemError(MicrosandboxError):
    """A filesystem operation inside the sandbox failed."""


class FilesystemPathNotFoundError(FilesystemError, FileNotFoundError):
    """The path does not exist inside the sandbox."""

    def __str__(self) -> str:  # FileNotFoundError would format errno/filename otherwise
        return str(self.args[0]) if self.args else ""


class ExecFailedError(MicrosandboxError):
    """The command could not be started (for example: no such executable in the image)."""


class CommandNotFoundError(ExecFailedError, FilesystemPathNotFoundError):
    """The command to run does not exist in the sandbox (not on ``PATH``, or no such file)."""


class ExecTimeoutError(MicrosandboxError, TimeoutError, RuntimeError):
    """A command ran past its ``timeout=`` and was killed, or a call gave up waiting.

    A ``RuntimeError`` too, as the earlier SDK raised for a command past its timeout.

    Attributes:
        output: For a command killed at its timeout, what it wrote until then
            (``output.timed_out`` is true); ``None`` when only the wait gave up.
    """

    output: ExecOutput | None

    def __init__(self, message: str, output: ExecOutput | None = None) -> None:
        super().__init__(message)
        self.output = output

    @classmethod
    def killed(cls, output: ExecOutput, timeout: float | None) -> ExecTimeoutError:
        """The error for a command killed at its own ``timeout``."""
        after = f" after {timeout}s" if timeout is not None else ""
        return cls(f"the command timed out and was killed{after}", output)


class CommandFailedError(MicrosandboxError):
    """Raised by :meth:`ExecOutput.check` for a command that did not succeed.

    Attributes:
        output: The command's :class:`ExecOutput`.
    """

    output: ExecOutput

    def __init__(self, output: ExecOutput) -> None:
        self.output = output
        if output.timed_out:
            what = "timed out"
        elif output.signal is not None:
            what = f"was killed by signal {output.signal}"
        else:
            what = f"exited with status {output.exit_code}"
        err = output.stderr().strip()
        super().__init__(f"command {what}" + (f": {err[-2000:]}" if err else ""))


class SandboxRuntimeError(MicrosandboxError):
    """The sandbox runtime (crun, libkrun) failed on the node."""


class GuestBootError(SandboxRuntimeError):
    """A microVM's guest did not boot on the node; the message says why (for example KVM there
    cannot run the guest kernel: ``microsandbox-agent doctor`` checks the host)."""


class InternalAgentError(AgentError):
    """The agent hit an internal error (see its log, ``<state-dir>/agent.log``)."""


class PermissionDeniedError(MicrosandboxError, PermissionError):
    """Authenticated, but not allowed: Kubernetes RBAC refused the call (cluster mode), e.g. no
    ``create`` on ``sandboxes`` or on ``sandboxes/exec`` in the namespace."""


class VolumeNotFoundError(MicrosandboxError, LookupError):
    """No named volume of that name exists on the agent."""


class VolumeAlreadyExistsError(MicrosandboxError):
    """A named volume of that name already exists."""


class VolumeInUseError(MicrosandboxError):
    """The named volume is mounted by a sandbox and cannot be removed."""


class PoolNotFoundError(MicrosandboxError, LookupError):
    """No warm pool of that name on the agent (:meth:`Pool.create` makes one)."""


class NoSpaceError(MicrosandboxError):
    """The node's disk is full (the agent's state directory: images, sandbox roots, volumes);
    nothing half-made was kept. Not a sandbox's own full disk, which its programs see as
    ``ENOSPC``."""


class SnapshotInUseError(MicrosandboxError):
    """A sandbox was created from the snapshot (its files are that sandbox's): not removed."""


class PatchFailedError(InvalidConfigError):
    """A root filesystem patch could not be applied; the message names it (``patch 2 (mkdir
    /app): ...``). Host paths of copies must be readable by you (agents the SDK starts) or
    lie under the agent's ``--host-root``."""


class ClusterError(MicrosandboxError):
    """Cluster mode: the Kubernetes API or the operator could not do what was asked."""


class ClusterConfigError(ClusterError):
    """No usable Kubernetes configuration (kubeconfig, context, in-cluster ServiceAccount), or
    one whose identity cannot be presented to node-agents (client certificates only)."""


class SchedulingError(ClusterError):
    """The operator could not place the sandbox on any node (capacity, isolation, volumes).

    Attributes:
        reason: The condition reason (``"Unschedulable"``, ``"IsolationNotAllowed"``...).
    """

    reason: str

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None) -> None:
        reason, _, _ = message.partition(":")
        self.reason = reason.strip()
        super().__init__(message, code=code, hint=hint)


class SandboxStartTimeoutError(ClusterError, TimeoutError):
    """The sandbox was not Ready in time (image pull, a busy node); it was deleted."""


class SandboxFailedError(ClusterError):
    """The sandbox failed on its node while starting (image not found, unsupported options)."""


# Cluster-mode codes (sdk/python/src/cluster.rs): class and advice.
_CLUSTER_CODES: dict[str, tuple[type[MicrosandboxError], str | None]] = {
    "config": (ClusterConfigError, "pass kubeconfig=/context= or set KUBECONFIG"),
    "forbidden": (
        PermissionDeniedError,
        "ask for a Role with create/get/list/watch/delete on sandboxes.microsandbox.dev (and "
        "volumes.microsandbox.dev for Volume) and create on sandboxes/exec in this namespace",
    ),
    "already_exists": (SandboxAlreadyExistsError, "pick another name or Sandbox.get(name)"),
    "not_found": (SandboxNotFoundError, None),
    "invalid": (InvalidConfigError, None),
    "unsupported": (UnsupportedFeatureError, None),
    "not_running": (SandboxNotRunningError, "kubectl describe sandbox <name> shows its state"),
    "unschedulable": (SchedulingError, "kubectl describe sandbox <name> shows the events"),
    "timeout": (SandboxStartTimeoutError, "raise ready_timeout= or check the node-agents"),
    "failed": (SandboxFailedError, "kubectl describe sandbox <name> shows the events"),
    "api": (ClusterError, None),
    "volume_not_found": (VolumeNotFoundError, "create it first with Volume.create(name)"),
    "volume_already_exists": (
        VolumeAlreadyExistsError,
        "pick another name or Volume.get(name)",
    ),
}


# The agent's error codes (wire/src/api.rs ErrorCode): class and the advice added to the message.
_CODES: dict[str, tuple[type[MicrosandboxError], str | None]] = {
    "unauthorized": (
        UnauthorizedError,
        "the token does not match this agent's agent.token; unset MSB_AGENT_TOKEN or point "
        "MSB_STATE_DIR at the agent's state directory",
    ),
    "forbidden": (
        PermissionDeniedError,
        "Kubernetes RBAC decides: create on sandboxes/exec of this Sandbox is needed",
    ),
    "volume_not_found": (VolumeNotFoundError, "create it first with Volume.create(name)"),
    "volume_already_exists": (VolumeAlreadyExistsError, "pick another name or reuse it"),
    "volume_in_use": (VolumeInUseError, "remove the sandboxes that mount it first"),
    "snapshot_in_use": (SnapshotInUseError, "remove the sandboxes created from it first"),
    "pool_not_found": (PoolNotFoundError, "create it with Pool.create(...) first"),
    "no_space": (
        NoSpaceError,
        "free space on the agent's disk (unused images, snapshots, volumes) or give it more",
    ),
    "patch_failed": (
        PatchFailedError,
        "fix that patch; copies read the host only below the agent's --host-root (MSB_HOST_ROOTS)",
    ),
    "invalid_request": (InvalidConfigError, "check the arguments of the call"),
    "invalid_name": (
        InvalidNameError,
        "use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit",
    ),
    "sandbox_not_found": (SandboxNotFoundError, "see Sandbox.list() for existing sandboxes"),
    "sandbox_already_exists": (
        SandboxAlreadyExistsError,
        "pick another name, use Sandbox.get(name), or Sandbox.remove(name) first",
    ),
    "sandbox_not_running": (
        SandboxNotRunningError,
        "a stopped sandbox cannot run commands; start() it again or create a new one",
    ),
    "sandbox_draining": (
        SandboxDrainingError,
        "the sandbox is draining and takes no new commands",
    ),
    "isolation_unavailable": (
        IsolationUnavailableError,
        "run `microsandbox-agent doctor` on the node to see what it can run, or pass another "
        "isolation=",
    ),
    "image_not_found": (ImageNotFoundError, "check the image name and tag"),
    "image_pull_failed": (ImagePullError, "see the agent log for the registry's answer"),
    "registry_unreachable": (
        RegistryUnreachableError,
        "check network access to the registry, or set a mirror with MSB_MIRRORS",
    ),
    "image_not_present": (
        ImageNotPresentError,
        "pull it first or use pull_policy='if-not-present'",
    ),
    "path_not_found": (FilesystemPathNotFoundError, None),
    "command_not_found": (CommandNotFoundError, "check the command's name and the image's PATH"),
    "fs_error": (FilesystemError, None),
    "exec_failed": (ExecFailedError, "check that the command is executable in the image"),
    "guest_boot_failed": (
        GuestBootError,
        "run `microsandbox-agent doctor` on the node, or ask for isolation='container'",
    ),
    "runtime_error": (SandboxRuntimeError, "see the agent log"),
    "internal": (InternalAgentError, "see the agent log"),
}


def _from_native(kind: str, code: str | None, message: str) -> MicrosandboxError:
    """Builds the exception for an error of the native client (called from Rust).

    ``kind`` is ``api`` (the agent answered with ``code``), ``cluster`` (cluster mode, with a
    ``ClusterErrorKind`` of ``sdk/rust/src/cluster``), ``unreachable``, ``protocol``, ``io``
    or ``websocket``.
    """
    if kind == "api" and code is not None:
        cls, hint = _CODES.get(code, (MicrosandboxError, None))
        return cls(message, code=code, hint=hint)
    if kind == "cluster" and code is not None:
        cls, hint = _CLUSTER_CODES.get(code, (ClusterError, None))
        return cls(message, code=code, hint=hint)
    if kind == "unreachable":
        return AgentUnreachableError(message)
    if kind == "protocol":
        return ProtocolError(message)
    if kind in ("io", "websocket"):
        return AgentConnectionError(message)
    return MicrosandboxError(message)


# The names the upstream SDK gives the same errors.
PathNotFoundError = FilesystemPathNotFoundError
ImagePullFailedError = ImagePullError
UnsupportedError = UnsupportedFeatureError
