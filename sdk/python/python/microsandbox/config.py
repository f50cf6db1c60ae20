"""Sandbox configuration objects: volumes, network policy, secrets and rootfs patches, all
enforced by the node agent outside the sandbox."""

from __future__ import annotations

import base64

import builtins
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .errors import InvalidConfigError, NetworkPolicyError

if TYPE_CHECKING:
    from .cluster import ModeArg

__all__ = ["Volume", "VolumeInfo", "NetworkPolicy", "Secret", "Patch"]

@dataclass(frozen=True)
class VolumeInfo:
    """A named volume on the node (local mode) or a Volume object (cluster mode)."""

    name: str
    quota_mib: int
    """Most data it holds; writes beyond fail with ENOSPC inside the sandbox."""
    used_bytes: int = 0
    created_at: int = 0
    """Seconds since the Unix epoch."""
    node: str | None = None
    """Cluster mode: the node that holds the data (None until placed)."""

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> VolumeInfo:
        return cls(
            name=d["name"],
            quota_mib=d["quota_mib"],
            used_bytes=d.get("used_bytes", 0),
            created_at=d.get("created_at", 0),
        )


@dataclass(frozen=True)
class Volume:
    """Storage mounted into a sandbox: ``volumes={"/data": Volume.named("cache")}``.

    Build with :meth:`bind`, :meth:`named` or :meth:`tmpfs`.
    """

    kind: Literal["bind", "named", "tmpfs"]
    source: str | None = None
    """Host path (bind) or volume name (named)."""
    readonly: bool = False
    size_mib: int | None = None
    """Size limit of a tmpfs."""

    @classmethod
    def bind(cls, path: str | os.PathLike[str], *, readonly: bool = False) -> Volume:
        """A host directory mounted into the sandbox (the path is made absolute now)."""
        return cls("bind", os.path.abspath(os.fspath(path)), readonly)

    @classmethod
    def named(cls, name: str, *, readonly: bool = False) -> Volume:
        """A named volume of the node (see :meth:`create`)."""
        if not name:
            raise InvalidConfigError("a named volume needs a name")
        return cls("named", name, readonly)

    @classmethod
    def tmpfs(cls, size_mib: int | None = None) -> Volume:
        """A memory-backed scratch directory, at most ``size_mib`` MiB."""
        if size_mib is not None and size_mib <= 0:
            raise InvalidConfigError(f"tmpfs size_mib must be positive, not {size_mib}")
        return cls("tmpfs", size_mib=size_mib)

    @staticmethod
    async def create(
        name: str,
        *,
        quota: int = 1024,
        node: str | None = None,
        node_selector: Mapping[str, str] | None = None,
        cluster: ModeArg = None,
    ) -> VolumeInfo:
        """Creates a named volume holding at most ``quota`` MiB; it outlives the sandboxes that
        mount it until :meth:`remove`.

        In cluster mode this creates a ``Volume`` object (on ``node``, or on a node with the
        labels ``node_selector``, or where the operator places it) and waits until its
        node-agent provisioned it; if that fails, times out or is cancelled, the object is
        deleted again. No matching node raises :class:`SchedulingError` with the reason."""
        if isinstance(quota, bool) or not isinstance(quota, int) or quota <= 0:
            raise InvalidConfigError(f"quota is in MiB and must be a positive int, not {quota!r}")
        from . import _agent
        from . import cluster as _cluster

        mode = _cluster.resolve(cluster)
        if node is not None and node_selector:
            raise InvalidConfigError("give node= or node_selector=, not both")
        if mode is not None:
            return await _cluster.create_volume(mode, name, quota, node, node_selector)
        if node is not None or node_selector:
            raise InvalidConfigError("node= and node_selector= place volumes in cluster mode only")
        client = await _agent.get_client()
        return VolumeInfo._from_dict(await client.volume_create(name, quota))

    @staticmethod
    async def get(name: str, *, cluster: ModeArg = None) -> VolumeInfo:
        """A named volume's quota and usage."""
        from . import _agent
        from . import cluster as _cluster

        mode = _cluster.resolve(cluster)
        if mode is not None:
            conn = await _cluster.connect(mode)
            return _cluster.volume_info(await conn.volume_get(name))
        client = await _agent.get_client()
        return VolumeInfo._from_dict(await client.volume_get(name))

    @staticmethod
    async def list(*, cluster: ModeArg = None) -> builtins.list[VolumeInfo]:
        """Named volumes of the node (local mode) or of the namespace (cluster mode)."""
        from . import _agent
        from . import cluster as _cluster

        mode = _cluster.resolve(cluster)
        if mode is not None:
            conn = await _cluster.connect(mode)
            return [_cluster.volume_info(o) for o in await conn.volume_list()]
        client = await _agent.get_client()
        return [VolumeInfo._from_dict(d) for d in await client.volume_list()]

    @staticmethod
    async def resize(name: str, *, quota: int, cluster: ModeArg = None) -> VolumeInfo:
        """Grows a named volume to ``quota`` MiB (never shrinks: :class:`InvalidConfigError`).
        Sandboxes using it see the space at once. In cluster mode this sets the Volume's
        ``spec.size``; its node-agent grows the data shortly after."""
        if isinstance(quota, bool) or not isinstance(quota, int) or quota <= 0:
            raise InvalidConfigError(f"quota is in MiB and must be a positive int, not {quota!r}")
        from . import _agent
        from . import cluster as _cluster

        mode = _cluster.resolve(cluster)
        if mode is not None:
            conn = await _cluster.connect(mode)
            return _cluster.volume_info(await conn.volume_resize(name, quota))
        client = await _agent.get_client()
        return VolumeInfo._from_dict(await client.volume_resize(name, quota))

    @staticmethod
    async def remove(name: str, *, cluster: ModeArg = None) -> None:
        """Deletes a named volume and its data (refused while a sandbox mounts it). In cluster
        mode deletes the Volume object and waits until it is gone (its ``reclaimPolicy`` says
        whether the node keeps the data)."""
        from . import _agent
        from . import cluster as _cluster

        mode = _cluster.resolve(cluster)
        if mode is not None:
            await (await _cluster.connect(mode)).volume_delete(name, True, 60.0)
            return
        client = await _agent.get_client()
        await client.volume_remove(name)


def _mounts_wire(volumes: Mapping[str, Volume] | None, memory_mib: int) -> list[dict[str, Any]]:
    """The node agent's form of ``volumes=`` (``MountSpec`` in wire/src/api.rs)."""
    out: list[dict[str, Any]] = []
    for path, v in (volumes or {}).items():
        if v.kind == "bind":
            out.append(
                {"kind": "bind", "host_path": v.source, "path": path, "readonly": v.readonly}
            )
        elif v.kind == "named":
            out.append({"kind": "named", "name": v.source, "path": path, "readonly": v.readonly})
        else:
            out.append({"kind": "tmpfs", "path": path, "size_mib": v.size_mib or memory_mib})
    return out


@dataclass(frozen=True)
class NetworkPolicy:
    """What a sandbox may reach on the network, enforced by the node-agent outside the sandbox
    (nftables on the sandbox's link, DNS through the agent's resolver).

    - :meth:`none` (the default): no network interface at all;
    - :meth:`public_only`: the public internet only: no loopback, private, link-local (cloud
      metadata), CGNAT, multicast or node addresses; DNS answers pointing there are refused;
    - :meth:`allow_all`: everything but the node itself.

    ``allow`` adds destinations whatever the preset: CIDRs (``"10.1.0.0/16"``), addresses and
    domain names (``"api.example.com"``, ``"*.example.com"``). ``publish`` maps ports of the
    host's 127.0.0.1 to ports of the sandbox (``{8080: 80}``), local mode only.
    """

    mode: Literal["none", "public-only", "allow-all"]
    allow: tuple[str, ...] = ()
    publish: tuple[tuple[int, int], ...] = ()

    @classmethod
    def none(
        cls, *, allow: Iterable[str] = (), publish: Mapping[int, int] | None = None
    ) -> NetworkPolicy:
        """No network access, except ``allow`` (the default)."""
        return cls("none", tuple(allow), tuple((publish or {}).items()))

    @classmethod
    def public_only(
        cls, *, allow: Iterable[str] = (), publish: Mapping[int, int] | None = None
    ) -> NetworkPolicy:
        """Internet access, but no private, loopback or link-local addresses (no host, no LAN)."""
        return cls("public-only", tuple(allow), tuple((publish or {}).items()))

    @classmethod
    def allow_all(
        cls, *, allow: Iterable[str] = (), publish: Mapping[int, int] | None = None
    ) -> NetworkPolicy:
        """Unrestricted network access (the node itself stays unreachable)."""
        return cls("allow-all", tuple(allow), tuple((publish or {}).items()))

    def __post_init__(self) -> None:
        if self.mode not in ("none", "public-only", "allow-all"):
            raise NetworkPolicyError(f"unknown network policy mode {self.mode!r}")
        for entry in self.allow:
            if not isinstance(entry, str) or not entry.strip():
                raise NetworkPolicyError(f"allow entries are CIDRs or host names, not {entry!r}")
        for host, guest in self.publish:
            for port in (host, guest):
                if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                    raise NetworkPolicyError(f"published ports are 1..65535, not {port!r}")

    def _wire(self) -> dict[str, Any]:
        """The node agent's form (``NetworkSpec`` in wire/src/api.rs)."""
        return {
            "policy": self.mode.replace("-", "_"),
            "allow": list(self.allow),
            "publish": [{"host_port": h, "guest_port": g} for h, g in self.publish],
        }


@dataclass(frozen=True)
class Secret:
    """A credential injected by the host, sent only to ``allow_hosts``.

    The value never enters the sandbox in clear: the sandbox sees a placeholder that the host
    swaps for the real value on requests to the allowed hosts.
    """

    kind: Literal["env"]
    name: str
    value: str = field(repr=False)
    allow_hosts: tuple[str, ...] = ()

    @classmethod
    def env(
        cls,
        name: str,
        value: str | None = None,
        *,
        allow_hosts: Iterable[str] | None = None,
    ) -> Secret:
        """A secret exposed as environment variable ``name``; ``value`` defaults to the host's
        own ``$name``."""
        if not name or "=" in name:
            raise InvalidConfigError(f"invalid environment variable name {name!r}")
        if value is None:
            value = os.environ.get(name)
            if value is None:
                raise InvalidConfigError(
                    f"secret {name}: no value given and ${name} is not set on the host"
                )
        return cls("env", name, value, tuple(allow_hosts or ()))


@dataclass(frozen=True)
class Patch:
    """A change to the sandbox's root filesystem made before it boots.

    Build with :meth:`text`, :meth:`append`, :meth:`mkdir`, :meth:`copy_file`,
    :meth:`copy_dir`, :meth:`symlink` or :meth:`remove`.
    """

    kind: Literal["text", "append", "mkdir", "copy_file", "copy_dir", "symlink", "remove"]
    path: str
    """Path in the sandbox the patch applies to."""
    content: bytes | None = None
    source: str | None = None
    """Host path (copies) or link target (symlink)."""
    mode: int | None = None

    @staticmethod
    def _guest(path: str) -> str:
        if not path.startswith("/"):
            raise InvalidConfigError(f"patch path {path!r} must be absolute")
        return path

    @classmethod
    def text(cls, path: str, content: str | bytes, *, mode: int | None = None) -> Patch:
        """Writes a file (created or replaced)."""
        data = content.encode() if isinstance(content, str) else bytes(content)
        return cls("text", cls._guest(path), content=data, mode=mode)

    @classmethod
    def append(cls, path: str, content: str | bytes) -> Patch:
        """Appends to a file (created if missing)."""
        data = content.encode() if isinstance(content, str) else bytes(content)
        return cls("append", cls._guest(path), content=data)

    @classmethod
    def mkdir(cls, path: str, *, mode: int | None = None) -> Patch:
        """Creates a directory and its parents."""
        return cls("mkdir", cls._guest(path), mode=mode)

    @classmethod
    def copy_file(cls, src: str | os.PathLike[str], dst: str, *, mode: int | None = None) -> Patch:
        """Copies a host file into the sandbox."""
        return cls("copy_file", cls._guest(dst), source=os.path.abspath(os.fspath(src)), mode=mode)

    @classmethod
    def copy_dir(cls, src: str | os.PathLike[str], dst: str) -> Patch:
        """Copies a host directory tree into the sandbox."""
        return cls("copy_dir", cls._guest(dst), source=os.path.abspath(os.fspath(src)))

    @classmethod
    def symlink(cls, target: str, link: str) -> Patch:
        """Creates the symbolic link ``link`` -> ``target``."""
        return cls("symlink", cls._guest(link), source=target)

    @classmethod
    def remove(cls, path: str) -> Patch:
        """Removes a file or directory tree."""
        return cls("remove", cls._guest(path))


def _check_not_enforced(
    volumes: Mapping[str, Volume] | None,
    network: NetworkPolicy | None,
    secrets: Iterable[Secret] | None,
    patches: Iterable[Patch] | None,
) -> None:
    """Raises for options the agent cannot apply yet (see the module docstring)."""
    if volumes:
        for guest, vol in volumes.items():
            if not isinstance(vol, Volume):
                raise InvalidConfigError(
                    f"volumes[{guest!r}] must be a Volume (Volume.bind/named/tmpfs), not {vol!r}"
                )
    if network is not None and not isinstance(network, NetworkPolicy):
        raise NetworkPolicyError(f"network must be a NetworkPolicy, not {network!r}")
    for s in list(secrets or ()):
        if not isinstance(s, Secret):
            raise InvalidConfigError(f"secrets must be Secret objects, not {s!r}")
        if not s.allow_hosts:
            raise InvalidConfigError(
                f"secret {s.name}: allow_hosts is empty, so its value could never be used"
            )
    for p in patches or ():
        if not isinstance(p, Patch):
            raise InvalidConfigError(f"patches must be Patch objects, not {p!r}")


def _patch_wire(p: Patch) -> dict[str, Any]:
    """The node agent's form of a patch (``RootPatch`` in wire/src/api.rs)."""
    b64 = base64.b64encode(p.content or b"").decode()
    if p.kind == "text":
        return {"op": "text", "path": p.path, "content_b64": b64, "mode": p.mode}
    if p.kind == "append":
        return {"op": "append", "path": p.path, "content_b64": b64}
    if p.kind == "mkdir":
        return {"op": "mkdir", "path": p.path, "mode": p.mode}
    if p.kind == "symlink":
        return {"op": "symlink", "path": p.path, "target": p.source}
    if p.kind == "remove":
        return {"op": "remove", "path": p.path}
    return {"op": "copy", "src": p.source, "path": p.path, "mode": p.mode}


def _patches_wire(patches: Iterable[Patch] | None) -> list[dict[str, Any]]:
    return [_patch_wire(p) for p in patches or ()]
