"""Pure tests: request building, error mapping, configuration objects, value types."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import microsandbox
from microsandbox import (
    CommandNotFoundError,
    ExecOutput,
    ExitedEvent,
    FilesystemPathNotFoundError,
    InvalidConfigError,
    InvalidNameError,
    MicrosandboxError,
    NetworkPolicy,
    NetworkPolicyError,
    Patch,
    Rlimit,
    SandboxNotFoundError,
    Secret,
    StdoutEvent,
    Volume,
)
from microsandbox import _native
from microsandbox.errors import _CODES, _from_native
from microsandbox.sandbox import _create_request, _exec_request


def test_all_is_complete_and_importable() -> None:
    for name in microsandbox.__all__:
        assert hasattr(microsandbox, name), name
    assert microsandbox.__version__.count(".") == 2


def test_exec_request() -> None:
    req = json.loads(_exec_request(
        "ls", ["-la"], cwd="/", env={"A": "b"}, timeout=1.5, rlimits={"NOFILE": (1, 2)},
        user="nobody", stdin_data="hi", tty=True,
    ))
    assert req == {
        "command": "ls", "args": ["-la"], "cwd": "/", "env": {"A": "b"}, "user": "nobody",
        "timeout_ms": 1500, "rlimits": [{"resource": "nofile", "soft": 1, "hard": 2}],
        "stdin": False, "tty": {"rows": 24, "cols": 80}, "stdin_b64": "aGk=",
    }
    assert json.loads(_exec_request("x", None, timeout=0.0001))["timeout_ms"] == 1
    assert Rlimit("RLIMIT_AS", 5)._to_dict() == {"resource": "as", "soft": 5, "hard": 5}
    with pytest.raises(InvalidConfigError):
        _exec_request("x", [1])  # type: ignore[list-item]
    with pytest.raises(InvalidConfigError):
        _exec_request("x", None, tty=(0, 80))


def test_create_request() -> None:
    req = json.loads(_create_request(
        "a", image="python", memory=256, cpus=2.0, env=None, workdir="/app",  # type: ignore[arg-type]
        isolation="container", detached=True, pids_limit=None,
        pull_policy="if_not_present",  # type: ignore[arg-type]
    ))
    assert req["cpus"] == 2 and req["pull_policy"] == "if-not-present" and req["detached"]
    with pytest.raises(InvalidConfigError, match="pull_policy"):
        _create_request("a", image="x", memory=1, cpus=1, env=None, workdir=None,
                        isolation=None, pull_policy="sometimes",  # type: ignore[arg-type]
                        detached=False, pids_limit=None)


def test_every_agent_error_code_maps_to_a_subclass_with_advice() -> None:
    # The agent's own list (microsandbox_wire::api::ErrorCode), exported by the native module.
    codes = list(_native.ERROR_CODES)
    assert "command_not_found" in codes and "sandbox_not_found" in codes
    assert sorted(_CODES) == sorted(codes)
    for code in codes:
        e = _from_native("api", code, "msg")
        assert type(e) is not MicrosandboxError and e.code == code and e.message == "msg"
    e = _from_native("api", "sandbox_not_found", "no sandbox x")
    assert isinstance(e, SandboxNotFoundError) and "Sandbox.list()" in str(e)
    assert isinstance(_from_native("api", "invalid_name", "m"), InvalidNameError)
    boot = _from_native("api", "guest_boot_failed", "KVM_EXIT_INTERNAL_ERROR")
    assert isinstance(boot, microsandbox.GuestBootError)
    assert isinstance(boot, microsandbox.SandboxRuntimeError) and "doctor" in str(boot)
    assert isinstance(_from_native("api", "command_not_found", "command not found: x"),
                      CommandNotFoundError)
    assert not isinstance(_from_native("api", "path_not_found", "command not found: x"),
                          CommandNotFoundError)
    e = _from_native("api", "path_not_found", "/x: No such file")
    assert isinstance(e, FilesystemPathNotFoundError) and str(e) == "/x: No such file"
    assert type(_from_native("api", "new_code", "m")) is MicrosandboxError
    assert isinstance(_from_native("unreachable", None, "m"), microsandbox.AgentUnreachableError)
    assert isinstance(_from_native("protocol", None, "m"), microsandbox.ProtocolError)
    assert isinstance(_from_native("websocket", None, "m"), microsandbox.AgentConnectionError)


def test_config_objects() -> None:
    v = Volume.bind("./src", readonly=True)
    assert v.kind == "bind" and v.readonly and v.source and v.source.startswith("/")
    assert Volume.tmpfs(size_mib=64).size_mib == 64
    with pytest.raises(InvalidConfigError):
        Volume.tmpfs(size_mib=0)
    assert NetworkPolicy.public_only().mode == "public-only"
    with pytest.raises(NetworkPolicyError):
        NetworkPolicy("open")  # type: ignore[arg-type]
    np = NetworkPolicy.public_only(allow=["10.1.0.0/16", "api.example.com"], publish={8080: 80})
    assert np._wire() == {
        "policy": "public_only",
        "allow": ["10.1.0.0/16", "api.example.com"],
        "publish": [{"host_port": 8080, "guest_port": 80}],
    }
    assert NetworkPolicy.none()._wire()["policy"] == "none"
    with pytest.raises(NetworkPolicyError):
        NetworkPolicy.allow_all(publish={0: 80})
    with pytest.raises(NetworkPolicyError):
        NetworkPolicy.none(allow=[""])
    s = Secret.env("TOKEN", value="hunter2", allow_hosts=["api.example.com"])
    assert "hunter2" not in repr(s) and s.allow_hosts == ("api.example.com",)
    with pytest.raises(InvalidConfigError, match="not set"):
        Secret.env("MSB_SURELY_UNSET_VARIABLE")
    assert Patch.text("/etc/motd", "hi").content == b"hi"
    assert Patch.symlink("/usr/bin/python3", "/usr/bin/python").source == "/usr/bin/python3"
    with pytest.raises(InvalidConfigError, match="absolute"):
        Patch.mkdir("relative/dir")


def test_values_are_frozen_and_matchable() -> None:
    out = ExecOutput(0, b"a\xff", b"")
    assert out.stdout() == "a\ufffd" and out.success
    with pytest.raises(AttributeError):
        out.exit_code = 1  # type: ignore[misc]
    match StdoutEvent(b"x"):
        case StdoutEvent(data=d):
            assert d == b"x"
    match ExitedEvent(1, None, True):
        case ExitedEvent(code, signal, timed_out):
            assert (code, signal, timed_out) == (1, None, True)


def test_upstream_names_and_bases() -> None:
    """The upstream SDK's error names, and RuntimeError where it raised one."""
    assert microsandbox.PathNotFoundError is microsandbox.FilesystemPathNotFoundError
    assert microsandbox.ImagePullFailedError is microsandbox.ImagePullError
    assert microsandbox.UnsupportedError is microsandbox.UnsupportedFeatureError
    assert issubclass(microsandbox.SandboxNotRunningError, RuntimeError)
    assert issubclass(microsandbox.ExecTimeoutError, RuntimeError)
    assert issubclass(microsandbox.ExecTimeoutError, TimeoutError)
    out = ExecOutput(0, b"hi\n", b"oops\n")
    assert (out.stdout_text, out.stderr_text) == ("hi\n", "oops\n")


def test_package_exports_every_error() -> None:
    import microsandbox.errors as errors

    missing = set(errors.__all__) - set(microsandbox.__all__)
    assert not missing, f"add to microsandbox.__all__: {sorted(missing)}"


def test_every_cluster_error_code_maps_to_a_typed_subclass() -> None:
    from microsandbox import errors

    for code in ("config", "forbidden", "already_exists", "not_found", "invalid",
                 "unschedulable", "timeout", "failed", "api"):
        exc = errors._from_native("cluster", code, "Unschedulable: 0/1 nodes are available")
        assert isinstance(exc, errors.MicrosandboxError)
        assert exc.code == code
    sched = errors._from_native("cluster", "unschedulable", "Unschedulable: 0/1 nodes")
    assert isinstance(sched, errors.SchedulingError) and sched.reason == "Unschedulable"
    assert isinstance(errors._from_native("cluster", "forbidden", "no"), PermissionError)
    assert isinstance(errors._from_native("cluster", "timeout", "slow"), TimeoutError)
    # The agent's own 403 (Kubernetes user without sandboxes/exec) is the same class.
    assert isinstance(errors._from_native("api", "forbidden", "no"),
                      errors.PermissionDeniedError)


def _object(name: str = "s", **kw: Any) -> dict[str, Any]:
    """The Sandbox object cluster mode posts for ``Sandbox.create(name, **kw)`` (the Rust core's
    translation, shared by every SDK)."""
    args: dict[str, Any] = dict(image="busybox", memory=64, cpus=1, env=None, workdir=None,
                                isolation=None, pull_policy="if-not-present", detached=False,
                                pids_limit=None)
    args.update(kw)
    return _native.sandbox_object("ns", _create_request(name, **args))


def test_cluster_secret_objects_carry_no_value() -> None:
    from microsandbox import Secret

    secrets = [
        Secret.env("API_KEY", value="val-one-9f", allow_hosts=["a.example.com"]),
        Secret.env("api_key", value="val-two-9f", allow_hosts=["a.example.com"]),
    ]
    obj = _object("job", network=microsandbox.NetworkPolicy.public_only(), secrets=secrets)
    assert [s["name"] for s in obj["spec"]["secrets"]] == ["job-api-key", "job-api-key-1"]
    assert "-9f" not in json.dumps(obj)


def test_cluster_mode_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    from microsandbox import Cluster, InvalidConfigError, cluster, set_mode

    monkeypatch.delenv("MICROSANDBOX_MODE", raising=False)
    assert cluster.resolve(None) is None
    monkeypatch.setenv("MICROSANDBOX_MODE", "cluster")
    monkeypatch.setenv("MICROSANDBOX_NAMESPACE", "team-a")
    from_env = cluster.resolve(None)
    assert from_env is not None and from_env.namespace == "team-a"
    explicit = Cluster(namespace="team-b")
    set_mode("local")
    try:
        assert cluster.resolve(None) is None  # set_mode wins over the environment
        assert cluster.resolve(explicit) is explicit  # the argument wins over set_mode
    finally:
        set_mode(None)
    assert cluster.resolve("local") is None
    monkeypatch.setenv("MICROSANDBOX_MODE", "swarm")
    with pytest.raises(InvalidConfigError):
        cluster.resolve(None)
    with pytest.raises(InvalidConfigError):
        Cluster(ready_timeout=0)


def test_agent_access_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """How the agent is reached is decided in the Rust core (its tests cover the routes); the
    Python options are checked up front."""
    from microsandbox import Cluster, InvalidConfigError, cluster

    with pytest.raises(InvalidConfigError):
        Cluster(agent_access="tunnel")  # type: ignore[arg-type]
    monkeypatch.setenv("MICROSANDBOX_MODE", "cluster")
    monkeypatch.setenv("MICROSANDBOX_AGENT_ACCESS", "proxy")
    from_env = cluster.resolve(None)
    assert from_env is not None and from_env.agent_access == "proxy"
    monkeypatch.setenv("MICROSANDBOX_AGENT_ACCESS", "wormhole")
    with pytest.raises(InvalidConfigError, match="MICROSANDBOX_AGENT_ACCESS"):
        cluster.resolve(None)


def test_volume_objects() -> None:
    from microsandbox import cluster

    assert cluster.quantity_bytes("512Mi") == 512 * 2**20
    assert cluster.quantity_bytes("1G") == 10**9
    assert cluster.quantity_bytes("1536") == 1536
    with pytest.raises(ValueError):
        cluster.quantity_bytes("12parsecs")
    obj = _native.volume_object("ns", "data", 256, "n1")
    assert obj["kind"] == "Volume" and obj["metadata"]["namespace"] == "ns"
    assert obj["spec"]["size"] == "256Mi" and obj["spec"]["placement"] == {"node": "n1"}
    assert "placement" not in _native.volume_object("ns", "d", 1)["spec"]
    sel = _native.volume_object("ns", "d", 1, None, {"zone": "a"})["spec"]
    assert sel["placement"] == {"nodeSelector": {"zone": "a"}}
    obj["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    obj["status"] = {"phase": "Ready", "node": "n1", "used": "2Mi"}
    info = cluster.volume_info(obj)
    assert (info.name, info.quota_mib, info.used_bytes, info.node) == ("data", 256, 2**21, "n1")
    assert info.created_at == 1767225600


def test_sandbox_object() -> None:
    obj = _object(image="python", memory=256, cpus=2, env={"A": "1"}, workdir="/app",
                  isolation="container", pull_policy="always", pids_limit=64)
    assert obj["metadata"] == {"name": "s", "namespace": "ns",
                               "labels": {"app.kubernetes.io/created-by": "microsandbox-sdk"}}
    spec = obj["spec"]
    assert spec["image"] == "python" and spec["imagePullPolicy"] == "Always"
    assert spec["resources"] == {"memory": "256Mi", "cpus": 2, "pids": 64}
    assert spec["isolation"] == "container" and spec["workdir"] == "/app"
    assert spec["env"] == [{"name": "A", "value": "1"}]
    assert spec["network"] == {"policy": "none"}
    wired = _object(network=microsandbox.NetworkPolicy.public_only(allow=["api.example.com"]))
    assert wired["spec"]["network"] == {"policy": "public_only", "allow": ["api.example.com"]}
    with pytest.raises(microsandbox.UnsupportedFeatureError, match="Service"):
        _object(network=microsandbox.NetworkPolicy.none(publish={2: 1}))


def test_sandbox_object_volumes(tmp_path: Path) -> None:
    from microsandbox import UnsupportedFeatureError, Volume

    obj = _object(volumes={"/d": Volume.named("data", readonly=True), "/t": Volume.tmpfs(16)})
    assert obj["spec"]["volumes"] == [
        {"path": "/d", "readOnly": True, "named": {"name": "data"}},
        {"path": "/t", "tmpfs": {"size": "16Mi"}},
    ]
    with pytest.raises(UnsupportedFeatureError):
        _object(volumes={"/d": Volume.bind(str(tmp_path))})
