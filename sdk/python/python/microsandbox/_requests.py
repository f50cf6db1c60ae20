"""Request building for the node agent's API: argument checks and JSON bodies (pure;
unit-tested without an agent)."""

from __future__ import annotations

import builtins
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

from .config import NetworkPolicy, Patch, Secret, Volume, _mounts_wire, _patches_wire
from .errors import InvalidConfigError
from .models import Isolation, PullPolicy, Rlimit

RlimitsArg: TypeAlias = Mapping[str, int | tuple[int, int]] | Iterable[Rlimit] | None
"""``{"nofile": 64}``, ``{"nofile": (64, 128)}`` or ``[Rlimit("nofile", 64, 128)]``."""

TtyArg: TypeAlias = bool | tuple[int, int] | None
"""``True`` for a 24x80 terminal, or ``(rows, cols)``."""


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
    idle_timeout: float | None = None,
    pool: str | None = None,
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
    policy = _pull_policy(pull_policy)
    if pids_limit is not None and (not isinstance(pids_limit, int) or pids_limit <= 0):
        raise InvalidConfigError(f"pids_limit must be a positive int, not {pids_limit!r}")
    idle_secs = None
    if idle_timeout is not None:
        if isinstance(idle_timeout, bool) or not isinstance(idle_timeout, (int, float)):
            raise InvalidConfigError(f"idle_timeout is in seconds, not {idle_timeout!r}")
        if not idle_timeout > 0:
            raise InvalidConfigError(f"idle_timeout must be positive, not {idle_timeout!r}")
        idle_secs = max(1, math.ceil(idle_timeout))
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
            "idle_timeout_secs": idle_secs,
            "pool": pool,
        }
    )


def _secrets_wire(secrets: Iterable[Secret] | None) -> list[dict[str, Any]]:
    """The node agent's form of ``secrets=`` (``SecretSpec`` in wire/src/api.rs)."""
    return [
        {"env": s.name, "value": s.value, "allow_hosts": list(s.allow_hosts)}
        for s in secrets or ()
    ]


def _pull_policy(pull_policy: PullPolicy) -> str:
    """``pull_policy`` as the agent spells it (``"if_not_present"``, capitals accepted)."""
    policy = str(pull_policy).replace("_", "-").lower()
    if policy not in ("always", "if-not-present", "never"):
        raise InvalidConfigError(
            f"pull_policy must be 'always', 'if-not-present' or 'never', not {pull_policy!r}"
        )
    return policy
