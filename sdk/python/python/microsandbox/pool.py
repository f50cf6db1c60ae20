"""Warm pools of the local node-agent: sandboxes of a template kept started, so that a create
naming the pool (``Sandbox.create(..., pool="py")``) takes one instead of booting."""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._requests import _create_request
from .config import NetworkPolicy
from .errors import InvalidConfigError
from .models import Isolation


@dataclass(frozen=True)
class PoolInfo:
    """A warm pool: how many sandboxes it keeps started, how many are ready now."""

    name: str
    size: int
    ready: int
    #: Creates served from the pool so far.
    claimed: int
    image: str

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> PoolInfo:
        return cls(
            name=d["name"], size=d["size"], ready=d["ready"], claimed=d["claimed"],
            image=d["image"],
        )


class Pool:
    """Warm pools of this machine's node-agent (local mode)."""

    @staticmethod
    async def create(
        name: str,
        *,
        size: int,
        image: str,
        memory: int = 512,
        cpus: int = 1,
        env: Mapping[str, str] | None = None,
        network: NetworkPolicy | None = None,
        isolation: Isolation | None = "container",
        pids_limit: int | None = None,
    ) -> PoolInfo:
        """Creates pool ``name`` (or changes it: same call, new size or template) and starts
        its sandboxes in the background. A create that names the pool is served from it when
        it asks for the same image, memory, cpus, isolation and network; its own name, env and
        workdir are applied at the claim."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidConfigError(f"size must be a whole number >= 0, not {size!r}")
        from . import _agent

        template = json.loads(
            _create_request(
                "template", image=image, memory=memory, cpus=cpus, env=env, workdir=None,
                isolation=isolation, pull_policy="if-not-present", detached=True,
                pids_limit=pids_limit, network=network,
            )
        )
        client = await _agent.get_client()
        spec = json.dumps({"size": size, "template": template})
        return PoolInfo._from_dict(await client.pool_put(name, spec))

    @staticmethod
    async def list() -> builtins.list[PoolInfo]:
        """The warm pools of the node-agent."""
        from . import _agent

        client = await _agent.get_client()
        return [PoolInfo._from_dict(d) for d in await client.pool_list()]

    @staticmethod
    async def remove(name: str) -> None:
        """Deletes pool ``name`` and its unclaimed sandboxes (claimed ones are their users')."""
        from . import _agent

        client = await _agent.get_client()
        await client.pool_remove(name)
