"""Sandbox lifecycle: create/get/list/remove, attached vs detached, context managers,
concurrency, stop/kill/drain, metrics, and the typed errors of each."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import pytest

from microsandbox import (
    InvalidConfigError,
    InvalidNameError,
    Metrics,
    MicrosandboxError,
    NetworkPolicy,
    Patch,
    PatchFailedError,
    Pool,
    Sandbox,
    SandboxAlreadyExistsError,
    SandboxInfo,
    SandboxNotFoundError,
    SandboxNotRunningError,
    Secret,
    SecretViolationError,
    Snapshot,
    UnsupportedFeatureError,
    Volume,
    VolumeInUseError,
    all_sandbox_metrics,
)

from .conftest import AgentProcess, host_files


async def gone(name: str, timeout: float = 10) -> bool:
    """Waits until the agent no longer knows `name`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        try:
            await Sandbox.get(name)
        except SandboxNotFoundError:
            return True
        await asyncio.sleep(0.1)
    return False


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=120, env=os.environ.copy(),
    )


async def test_create_get_list_remove(name: str) -> None:
    sb = await Sandbox.create(name, image="busybox", memory=128, cpus=1, env={"X": "1"})
    try:
        assert sb.name == name and not sb.detached
        assert sb.info.state == "running" and sb.info.running
        assert sb.info.memory_mib == 128 and sb.info.image == "busybox"
        assert sb.info.isolation in ("container", "microvm")
        assert (await sb.shell("echo $X")).stdout() == "1\n"

        same = await Sandbox.get(name)
        assert same.info.name == name and same.info.image_digest == sb.info.image_digest
        listed = {i.name: i for i in await Sandbox.list()}
        assert isinstance(listed[name], SandboxInfo)
        assert (await sb.refresh()).state == "running"
    finally:
        await Sandbox.remove(name)
    with pytest.raises(SandboxNotFoundError):
        await Sandbox.get(name)
    assert name not in {i.name for i in await Sandbox.list()}


async def test_generated_name() -> None:
    async with await Sandbox.create(image="busybox") as sb:
        assert sb.name.startswith("sandbox-")


async def test_typed_errors(busybox: Sandbox, name: str) -> None:
    with pytest.raises(SandboxNotFoundError, match="Sandbox.list") as e:
        await Sandbox.get("no-such-sandbox")
    assert e.value.code == "sandbox_not_found" and isinstance(e.value, MicrosandboxError)
    with pytest.raises(SandboxNotFoundError):
        await Sandbox.remove("no-such-sandbox")

    with pytest.raises(SandboxAlreadyExistsError, match="pick another name"):
        await Sandbox.create(busybox.name, image="busybox")
    assert (await busybox.exec("true")).success  # the existing one is untouched

    for bad in ("Bad_Name", "-x", "a" * 64):
        with pytest.raises(InvalidNameError, match="lowercase") as ei:
            await Sandbox.create(bad, image="busybox")
        assert ei.value.code == "invalid_name" and isinstance(ei.value, ValueError)

    with pytest.raises(InvalidConfigError, match="memory"):
        await Sandbox.create(name, image="busybox", memory=0)
    with pytest.raises(InvalidConfigError, match="cpus"):
        await Sandbox.create(name, image="busybox", cpus=0.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigError, match="isolation"):
        await Sandbox.create(name, image="busybox", isolation="vm")  # type: ignore[arg-type]


async def test_image_errors(name: str) -> None:
    from microsandbox import ImageError, ImageNotPresentError

    with pytest.raises(ImageError) as e:
        await Sandbox.create(name, image="no-such-image-xyz")
    assert e.value.code in ("image_not_found", "image_pull_failed")
    with pytest.raises(ImageNotPresentError):
        await Sandbox.create(name, image="busybox:not-pulled-tag", pull_policy="never")
    assert await gone(name, 1)


async def test_secret_is_a_placeholder_and_plain_http_use_is_blocked(name: str) -> None:
    secret = Secret.env("API_KEY", value="s3cret-value-42", allow_hosts=["api.example.com"])
    # allow_all so that the proxy sees the request; it blocks it before connecting anywhere
    # (and the test agent's uplink namespace has no route out anyway).
    async with await Sandbox.create(
        name, image="busybox", network=NetworkPolicy.allow_all(), secrets=[secret]
    ) as sb:
        env = (await sb.shell("echo $API_KEY")).stdout().strip()
        assert env.startswith("msb-secret-api-key-") and "s3cret" not in env
        assert await sb.secret_violations() == []
        out = await sb.shell(
            'wget -O- --header "Authorization: Bearer $API_KEY" http://203.0.113.10/ 2>&1'
        )
        assert out.exit_code != 0 and "403" in out.stdout()
        [v] = await sb.secret_violations()
        assert (v.secret, v.host, v.reason) == (
            "API_KEY",
            "203.0.113.10",
            "secrets are only sent over HTTPS",
        )
        # The exec that did it says so, and check() makes it an error.
        assert out.secret_violations == (v,)
        with pytest.raises(SecretViolationError, match="API_KEY -> 203.0.113.10") as e:
            out.check()
        assert e.value.violations == (v,) and e.value.output is out
        assert (await sb.shell("true")).check().secret_violations == ()
        assert "s3cret" not in (await sb.shell("env; cat /proc/1/environ")).stdout()
    with pytest.raises(InvalidConfigError, match="allow_hosts"):
        await Sandbox.create(name, image="busybox", secrets=[Secret.env("X", value="v")])
    assert await gone(name, 1)
    # No network at all (the default) means no interface but loopback.
    async with await Sandbox.create(name, image="busybox", network=NetworkPolicy.none()) as sb:
        out = await sb.shell("ls /sys/class/net")
        assert out.stdout().split() in ([], ["lo"])


async def test_context_manager_removes_on_exception(name: str) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with await Sandbox.create(name, image="busybox") as sb:
            assert (await sb.exec("true")).success
            raise RuntimeError("boom")
    assert await gone(name, 1)


async def test_context_manager_removes_on_cancellation(name: str) -> None:
    started = asyncio.Event()

    async def work() -> None:
        async with await Sandbox.create(name, image="busybox") as sb:
            started.set()
            await sb.exec("sleep", ["30"])

    task = asyncio.create_task(work())
    await asyncio.wait_for(started.wait(), 30)
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(name, 5)


async def test_detached_survives_its_creator(name: str) -> None:
    proc = run_python(f"""
        import asyncio
        from microsandbox import Sandbox
        async def main():
            sb = await Sandbox.create_detached({name!r}, image="busybox")
            await sb.fs.write("/tmp/mark", "from the creator")
            print(sb.info.detached)
        asyncio.run(main())
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"
    await asyncio.sleep(0.5)
    sb = await Sandbox.get(name)
    assert sb.detached and sb.info.running
    assert await sb.fs.read_text("/tmp/mark") == "from the creator"
    async with sb:  # a handle from get() removes it at the end of `async with` ...
        pass
    assert await gone(name, 1)


async def test_detach_keeps_a_detached_sandbox(name: str) -> None:
    async with await Sandbox.create_detached(name, image="busybox") as sb:
        sb.detach()  # ... unless detached from the handle.
    assert (await Sandbox.get(name)).info.running
    async with await Sandbox.get(name) as sb:
        await sb.detach()  # awaited, as the upstream SDK's detach is
    assert (await Sandbox.get(name)).info.running
    await Sandbox.remove(name)


async def test_attached_dies_with_its_creator(name: str) -> None:
    proc = run_python(f"""
        import asyncio
        from microsandbox import Sandbox
        async def main():
            sb = await Sandbox.create({name!r}, image="busybox")
            print(sb.info.detached)
        asyncio.run(main())
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    assert await gone(name, 10)


async def test_attached_cannot_be_detached(busybox: Sandbox) -> None:
    with pytest.raises(UnsupportedFeatureError, match="create_detached"):
        busybox.detach()
    with pytest.raises(UnsupportedFeatureError, match="create_detached"):
        await busybox.detach()


async def test_twenty_concurrent_sandboxes() -> None:
    names = [f"t-conc-{i}-{os.getpid()}" for i in range(20)]

    async def one(n: str) -> str:
        async with await Sandbox.create(n, image="busybox", memory=64) as sb:
            out = await sb.shell(f"echo {n}")
            return out.stdout().strip()

    results = await asyncio.gather(*(one(n) for n in names))
    assert results == names
    left = {i.name for i in await Sandbox.list()}
    assert not left & set(names)


async def test_stop_kill_drain(name: str) -> None:
    detached = await Sandbox.create_detached(name, image="busybox")
    info = await detached.stop(timeout=2)
    assert info.state == "stopped"
    with pytest.raises(SandboxNotRunningError, match="start"):
        await detached.exec("true")
    await Sandbox.remove(name)

    attached = await Sandbox.create(name, image="busybox")
    info = await attached.kill()
    assert info.state in ("stopped", "failed")
    # Listed until removed, attached or not.
    assert (await Sandbox.get(name)).info.state == info.state
    await Sandbox.remove(name)
    assert await gone(name, 1)

    attached = await Sandbox.create(name, image="busybox")
    handle = await attached.exec_stream("sh", ["-c", "sleep 0.5; echo done"])
    info = await attached.drain(timeout=10)
    assert info.state == "stopped"
    out = await handle.wait(timeout=10)
    assert out.stdout() == "done\n"  # the running command was allowed to finish
    await attached.destroy()
    assert await gone(name, 1)


async def test_start_again_keeps_files_not_patches(name: str) -> None:
    sb = await Sandbox.create(name, image="busybox", workdir="/app",
                              patches=[Patch.text("/etc/motd", "from the patch\n")])
    async with sb:
        await sb.shell("echo edited > /etc/motd; echo kept > /app/data")
        await sb.stop(timeout=1)
        with pytest.raises(SandboxNotRunningError):
            await sb.exec("true")
        info = await sb.start()
        assert info.state == "running" and sb.info.state == "running"
        out = await sb.shell("cat /etc/motd /app/data; pwd")
        # The writable layer as the stop left it; the create's patches not applied again.
        assert out.stdout() == "edited\nkept\n/app\n"
        assert (await sb.start()).state == "running"  # running: left as it is
        await sb.kill()
        assert (await sb.start()).state == "running"
        assert isinstance(await sb.logs(), str)
        assert await sb.logs(tail_bytes=0) == ""


async def test_start_again_refused_with_secrets(name: str) -> None:
    sb = await Sandbox.create(
        name, image="busybox", network=NetworkPolicy.public_only(),
        secrets=[Secret.env("API_KEY", value="v-123", allow_hosts=["api.example.com"])],
    )
    async with sb:
        await sb.stop(timeout=1)
        with pytest.raises(InvalidConfigError, match="API_KEY"):
            await sb.start()


async def test_pause_resume(name: str) -> None:
    async with await Sandbox.create(name, image="busybox") as sb:
        await sb.shell("nohup sh -c 'while :; do :; done' >/dev/null 2>&1 &")
        info = await sb.pause()
        assert info.state == "paused" and sb.info.state == "paused"
        assert (await Sandbox.get(name)).info.state == "paused"
        cpu = (await sb.metrics()).cpu_usage_us
        await asyncio.sleep(0.3)
        assert (await sb.metrics()).cpu_usage_us == cpu  # frozen: no CPU time at all
        with pytest.raises(SandboxNotRunningError, match="paused"):
            await sb.exec("true")
        assert (await sb.resume()).state == "running"
        assert (await sb.shell("echo back")).stdout() == "back\n"


async def test_idle_sandbox_is_suspended_and_resumed_by_the_next_command(name: str) -> None:
    with pytest.raises(InvalidConfigError, match="idle_timeout"):
        await Sandbox.create(name, image="busybox", idle_timeout=0)
    async with await Sandbox.create(name, image="busybox", idle_timeout=1) as sb:
        for _ in range(40):
            await asyncio.sleep(0.1)
            if (await sb.refresh()).state == "suspended":
                break
        assert sb.info.state == "suspended"
        assert (await sb.shell("echo hi")).stdout() == "hi\n"
        assert (await sb.refresh()).state == "running"


async def test_snapshot_and_a_sandbox_from_it(name: str) -> None:
    async with await Sandbox.create(name, image="busybox") as sb:
        await sb.shell("echo saved > /root-file; rm /etc/group")
        with pytest.raises(InvalidConfigError, match="pause or stop"):
            await sb.snapshot(f"{name}-snap")
        await sb.pause()
        snap = await sb.snapshot(f"{name}-snap")
        assert snap.image == f"microsandbox.local/snapshots/{name}-snap:latest"
        assert snap in await Snapshot.list()
    async with await Sandbox.create(f"{name}-2", image=snap.image) as again:
        out = await again.shell("cat /root-file; test -e /etc/group || echo gone")
        assert out.stdout() == "saved\ngone\n"
    # A Kubernetes Secret means nothing to a local push: refused before anything is sent.
    with pytest.raises(InvalidConfigError, match="cluster mode only"):
        await Snapshot.push(snap.name, "127.0.0.1:5000/msb-test/x:1", secret="creds")
    # Pushed to the local registry, then gone from the node: a sandbox pulls it back.
    pushed = await Snapshot.push(snap.name, f"127.0.0.1:5000/msb-test/{name}:{os.getpid()}")
    assert pushed == f"127.0.0.1:5000/msb-test/{name}:{os.getpid()}"
    await Snapshot.remove(snap.name)
    assert snap not in await Snapshot.list()
    async with await Sandbox.create(f"{name}-3", image=pushed, pull_policy="always") as pulled:
        out = await pulled.shell("cat /root-file; test -e /etc/group || echo gone")
        assert out.stdout() == "saved\ngone\n"


async def test_warm_pool_claim(name: str) -> None:
    pool = f"{name}-pool"
    info = await Pool.create(pool, size=1, image="busybox", memory=64)
    assert info.name == pool and info.size == 1
    try:
        for _ in range(200):
            if any(p.name == pool and p.ready == 1 for p in await Pool.list()):
                break
            await asyncio.sleep(0.05)
        async with await Sandbox.create(
            name, image="busybox", memory=64, isolation="container", pool=pool,
            env={"WHO": "me"},
        ) as sb:
            assert sb.info.labels["microsandbox.dev/launch"] == "warm"
            out = await sb.shell("hostname; echo $WHO")
            assert out.stdout() == f"{name}\nme\n"
        # A request the template cannot serve boots a sandbox.
        async with await Sandbox.create(
            f"{name}-b", image="busybox", memory=128, isolation="container", pool=pool,
        ) as cold:
            assert cold.info.labels["microsandbox.dev/launch"] == "cold"
    finally:
        await Pool.remove(pool)
    assert pool not in [p.name for p in await Pool.list()]


async def test_metrics(busybox: Sandbox) -> None:
    await busybox.shell("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
    m = await busybox.metrics()
    assert isinstance(m, Metrics) and m.name == busybox.name
    assert m.cpu_usage_us > 0 and m.memory_bytes > 0 and m.processes >= 1
    assert m.memory_limit_bytes == 128 * 1024 * 1024
    assert m.cpu_seconds == m.cpu_usage_us / 1e6
    every = await all_sandbox_metrics()
    assert every[busybox.name].name == busybox.name
    assert all(name == m.name for name, m in every.items())


async def test_pull_image() -> None:
    from microsandbox import ImageError, pull_image

    digest = await pull_image("busybox")
    assert digest.startswith("sha256:")
    assert await pull_image("busybox", "if-not-present") == digest
    with pytest.raises(ImageError):
        await pull_image("no-such-image-xyz")


async def test_patches_are_applied_before_boot(agent: AgentProcess, name: str) -> None:
    src = host_files(agent.state) / f"{name}-src"
    (src / "sub").mkdir(parents=True, exist_ok=True)
    (src / "sub" / "data.txt").write_text("from the host")
    (host_files(agent.state) / f"{name}.sh").write_text("#!/bin/sh\necho tool\n")
    patches = [
        Patch.mkdir("/app/cache", mode=0o700),
        Patch.text("/app/settings.toml", "debug = true\n"),
        Patch.append("/etc/motd", b"hello\n"),
        Patch.symlink("/app/cache", "/app/link"),
        Patch.remove("/bin/vi"),
        Patch.copy_dir(src, "/opt/src"),
        Patch.copy_file(host_files(agent.state) / f"{name}.sh", "/usr/local/bin/tool", mode=0o755),
    ]
    async with await Sandbox.create(name, image="busybox", patches=patches) as sb:
        out = await sb.shell(
            "cat /app/settings.toml /etc/motd; readlink /app/link; stat -c %a /app/cache; "
            "test -e /bin/vi || echo no-vi; cat /opt/src/sub/data.txt; echo; tool"
        )
        assert out.stdout() == (
            "debug = true\nhello\n/app/cache\n700\nno-vi\nfrom the host\ntool\n"
        )
    # A host path outside the agent's --host-root is refused, naming the patch.
    with pytest.raises(PatchFailedError, match=r"patch 0 \(copy /x\).*--host-root"):
        await Sandbox.create(
            name, image="busybox", patches=[Patch.copy_file("/etc/hostname", "/x")]
        )
    assert await gone(name, 1)


async def test_volumes_named_bind_tmpfs(agent: AgentProcess, name: str) -> None:
    vol = f"{name}-vol"
    info = await Volume.create(vol, quota=8)
    assert (info.name, info.quota_mib) == (vol, 8)
    shared = host_files(agent.state) / f"{name}-shared"
    shared.mkdir(parents=True, exist_ok=True)
    (shared / "in.txt").write_text("from host")
    volumes = {
        "/data": Volume.named(vol),
        "/in": Volume.bind(shared, readonly=True),
        "/scratch": Volume.tmpfs(size_mib=4),
    }
    async with await Sandbox.create(name, image="busybox", volumes=volumes) as sb:
        assert (await sb.shell("cat /in/in.txt")).stdout() == "from host"
        ro = await sb.shell("{ echo x > /in/new; } 2>&1")
        assert "Read-only" in ro.stdout()
        full = await sb.shell("dd if=/dev/zero of=/data/big bs=1M count=32 2>&1; rm /data/big")
        assert "No space left" in full.stdout()
        await sb.shell("echo persisted > /data/keep")
        with pytest.raises(VolumeInUseError):
            await Volume.remove(vol)
    # Unused, it grows (offline); the data stays and the space is there; it never shrinks.
    assert (await Volume.resize(vol, quota=40)).quota_mib == 40
    with pytest.raises(InvalidConfigError):
        await Volume.resize(vol, quota=8)
    async with await Sandbox.create(name, image="busybox", volumes={"/d": Volume.named(vol)}) as sb:
        assert (await sb.shell("cat /d/keep")).stdout() == "persisted\n"
        grown = await sb.shell("dd if=/dev/zero of=/d/big bs=1M count=32 2>&1 && echo ok")
        assert grown.stdout().endswith("ok\n"), grown.stdout()
    assert vol in [v.name for v in await Volume.list()]
    await Volume.remove(vol)
    assert vol not in [v.name for v in await Volume.list()]
