"""microsandbox: run untrusted code in sandboxes (microVMs or containers), from Python.

::

    from microsandbox import Sandbox

    async with await Sandbox.create("my-sandbox", image="python") as sb:
        output = await sb.exec("python", ["-c", "print('Hello!')"])
        print(output.stdout())

Local mode (the default): the SDK talks to the node agent (``microsandbox-agent``) on this
machine, starting it when none runs; see :mod:`microsandbox._agent` for where it looks
(``MSB_STATE_DIR``, ``MSB_AGENT_SOCKET``, ``MSB_AGENT_BIN``).

Cluster mode: the same API creates ``Sandbox`` objects through the Kubernetes API and reaches
each sandbox through its node-agent; see :mod:`microsandbox.cluster`.
"""

from __future__ import annotations

from ._install import install, is_installed
from ._native import __version__
from .config import NetworkPolicy, Patch, Secret, Volume, VolumeInfo
from .cluster import Cluster, set_mode
from .errors import (
    AgentConnectionError,
    AgentError,
    AgentNotInstalledError,
    AgentUnreachableError,
    ClusterConfigError,
    ClusterError,
    ImagePullFailedError,
    PathNotFoundError,
    UnsupportedError,
    CommandFailedError,
    CommandNotFoundError,
    ExecFailedError,
    ExecTimeoutError,
    FilesystemError,
    FilesystemPathNotFoundError,
    ImageError,
    ImageNotFoundError,
    ImageNotPresentError,
    ImagePullError,
    InternalAgentError,
    InvalidConfigError,
    InvalidNameError,
    IsolationUnavailableError,
    MicrosandboxError,
    NetworkPolicyError,
    PatchFailedError,
    PermissionDeniedError,
    ProtocolError,
    RegistryUnreachableError,
    SandboxAlreadyExistsError,
    SandboxDrainingError,
    SandboxFailedError,
    SandboxNotFoundError,
    SandboxNotRunningError,
    SandboxRuntimeError,
    GuestBootError,
    SandboxStartTimeoutError,
    SchedulingError,
    SecretViolationError,
    UnauthorizedError,
    UnsupportedFeatureError,
    VolumeAlreadyExistsError,
    VolumeInUseError,
    SnapshotInUseError,
    PoolNotFoundError,
    NoSpaceError,
    VolumeNotFoundError,
)
from .legacy import BaseSandbox, Command, CommandExecution, Execution, NodeSandbox, PythonSandbox
from .models import (
    AgentInfo,
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
    SandboxState,
    Snapshot,
    StartedEvent,
    StderrEvent,
    StdoutEvent,
)
from .pool import Pool, PoolInfo
from .sandbox import ExecHandle, Sandbox, SandboxFs, all_sandbox_metrics, pull_image

__all__ = [
    "__version__",
    # sandboxes
    "Sandbox",
    "SandboxFs",
    "SandboxInfo",
    "Snapshot",
    "Pool",
    "PoolInfo",
    "SandboxState",
    "Isolation",
    "PullPolicy",
    "all_sandbox_metrics",
    "pull_image",
    "agent_info",
    "is_installed",
    "install",
    # execution
    "ExecOutput",
    "ExecHandle",
    "ExecEvent",
    "StartedEvent",
    "StdoutEvent",
    "StderrEvent",
    "ExitedEvent",
    "Rlimit",
    # files, metrics, agent
    "FileStat",
    "Metrics",
    "SecretViolation",
    "AgentInfo",
    # configuration
    "Volume",
    "VolumeInfo",
    "NetworkPolicy",
    "Secret",
    "Patch",
    # earlier API
    "PythonSandbox",
    "NodeSandbox",
    "BaseSandbox",
    "Command",
    "Execution",
    "CommandExecution",
    # cluster mode
    "Cluster",
    "set_mode",
    # errors (microsandbox.errors; a test checks this list is complete)
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
    "PathNotFoundError",
    "ImagePullFailedError",
    "UnsupportedError",
]


async def agent_info() -> AgentInfo:
    """What the node agent says about itself (version, node, isolation levels)."""
    from . import _agent

    client = await _agent.get_client()
    return AgentInfo._from_dict(await client.info())
