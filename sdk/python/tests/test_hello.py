"""The issue's example, as written (minus the options the agent cannot enforce yet)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from microsandbox import (
    NetworkPolicy,
    Sandbox,
    SandboxNotFoundError,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


async def image_has_python() -> bool:
    """Docker's `python` image has /usr/bin/python; the local test image may only have python3."""
    async with await Sandbox.create(image="python") as sb:
        return await sb.fs.exists("/usr/bin/python") or await sb.fs.exists("/usr/local/bin/python")


async def test_seed_example(capsys: pytest.CaptureFixture[str]) -> None:
    if not await image_has_python():
        pytest.skip(
            "the test registry's python image has no `python` command (only python3); "
            "scripts/test-images.sh should add the symlink docker.io/library/python has"
        )
    sb = await Sandbox.create(
        "my-sandbox",
        image="python",
        memory=512,
        cpus=2,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
        workdir="/app",
    )
    output = await sb.exec("python", ["-c", "print('Hello!')"])
    print(output.stdout())
    await sb.stop()

    assert capsys.readouterr().out == "Hello!\n\n"
    assert output.exit_code == 0 and output.success
    # Stopped, it stays listed until removed (the PyPI package's stop-then-remove works).
    assert (await Sandbox.get("my-sandbox")).info.state == "stopped"
    await Sandbox.remove("my-sandbox")
    with pytest.raises(SandboxNotFoundError):
        await Sandbox.get("my-sandbox")


async def test_seed_example_with_python3(capsys: pytest.CaptureFixture[str]) -> None:
    """The same with `python3`, which every python image has."""
    sb = await Sandbox.create(
        "my-sandbox-3",
        image="python",
        memory=512,
        cpus=2,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
        workdir="/app",
    )
    output = await sb.exec("python3", ["-c", "print('Hello!')"])
    print(output.stdout())
    await sb.stop()
    assert capsys.readouterr().out == "Hello!\n\n"
    assert output.success


async def test_seed_example_network_policy_is_applied() -> None:
    # The seed's public_only policy: the sandbox gets a policed link and the agent's resolver.
    # (The test agent's uplink namespace has no route anywhere, so nothing leaves the machine.)
    sb = await Sandbox.create(
        "my-sandbox-net", image="busybox", memory=64, network=NetworkPolicy.public_only()
    )
    try:
        assert "eth0" in (await sb.shell("ls /sys/class/net")).stdout().split()
        resolv = (await sb.fs.read("/etc/resolv.conf")).decode()
        assert "nameserver 10.213." in resolv
        # The metadata address is never reachable under public_only.
        out = await sb.shell(
            "nc -w 1 169.254.169.254 80 </dev/null && echo reached || echo blocked"
        )
        assert out.stdout().strip() == "blocked"
    finally:
        await sb.destroy()
    with pytest.raises(SandboxNotFoundError):
        await Sandbox.get("my-sandbox-net")


async def test_hello_example_runs_as_written() -> None:
    if not await image_has_python():
        pytest.skip("the test registry's python image has no `python` command")
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "hello.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Hello!\n\n"
