"""Collected exec: exit codes, bytes, options, timeouts, large output."""

from __future__ import annotations

import hashlib

import pytest

from microsandbox import (
    CommandFailedError,
    CommandNotFoundError,
    ExecFailedError,
    ExecOutput,
    ExecTimeoutError,
    FilesystemPathNotFoundError,
    InvalidConfigError,
    Rlimit,
    Sandbox,
)


async def test_exit_codes_and_streams(busybox: Sandbox) -> None:
    ok = await busybox.exec("echo", ["hello", "world"])
    assert ok == ExecOutput(exit_code=0, stdout_bytes=b"hello world\n")
    assert ok.stdout() == "hello world\n" and ok.stderr() == "" and ok.success

    out = await busybox.shell("echo out; echo err >&2; exit 3")
    assert (out.exit_code, out.stdout(), out.stderr()) == (3, "out\n", "err\n")
    assert not out.success and out.signal is None and not out.timed_out
    with pytest.raises(CommandFailedError, match="exited with status 3: err"):
        out.check()
    assert ok.check() is ok


async def test_binary_output_is_bytes(busybox: Sandbox) -> None:
    out = await busybox.shell(r"printf '\000\001\377\376'")
    assert out.stdout_bytes == b"\x00\x01\xff\xfe"
    assert out.stdout() == "\x00\x01\ufffd\ufffd"  # invalid UTF-8 replaced, never raises


async def test_killed_by_signal(busybox: Sandbox) -> None:
    out = await busybox.shell("kill -9 $$")
    assert out.signal == 9 and out.exit_code == 137 and not out.success


async def test_options(busybox: Sandbox) -> None:
    out = await busybox.shell("pwd; echo $FOO", cwd="/tmp", env={"FOO": "bar baz"})
    assert out.stdout() == "/tmp\nbar baz\n"
    assert (await busybox.exec("id", ["-u"], user="nobody")).stdout() == "65534\n"
    assert (await busybox.shell("ulimit -n", rlimits={"nofile": 77})).stdout() == "77\n"
    out = await busybox.shell("ulimit -Sn; ulimit -Hn", rlimits=[Rlimit("nofile", 50, 60)])
    assert out.stdout() == "50\n60\n"
    assert (await busybox.exec("cat", stdin=b"\x00abc")).stdout_bytes == b"\x00abc"
    assert (await busybox.exec("wc", ["-c"], stdin="héllo")).stdout().strip() == "6"


async def test_timeout_raises_with_the_partial_output(busybox: Sandbox) -> None:
    with pytest.raises(ExecTimeoutError, match="timed out") as caught:
        await busybox.shell("echo partial; sleep 30", timeout=0.5)
    out = caught.value.output
    assert out is not None and out.timed_out and out.signal == 9 and not out.success
    assert out.stdout() == "partial\n"
    assert isinstance(caught.value, TimeoutError)
    with pytest.raises(CommandFailedError, match="timed out"):
        out.check()
    # The sandbox goes on serving.
    assert (await busybox.exec("echo", ["after"])).stdout() == "after\n"


async def test_missing_command_and_cwd(busybox: Sandbox) -> None:
    with pytest.raises(CommandNotFoundError, match="nope") as e:
        await busybox.exec("nope")
    assert isinstance(e.value, ExecFailedError) and isinstance(e.value, FileNotFoundError)
    assert e.value.code == "command_not_found"
    with pytest.raises(FilesystemPathNotFoundError, match="/no/such/dir"):
        await busybox.exec("true", cwd="/no/such/dir")


async def test_invalid_arguments_fail_before_the_agent(busybox: Sandbox) -> None:
    with pytest.raises(InvalidConfigError, match="sb.shell"):
        await busybox.exec("echo", "hello")  # a str is a Sequence[str]: caught at runtime
    with pytest.raises(InvalidConfigError, match="timeout"):
        await busybox.exec("true", timeout=0)
    with pytest.raises(InvalidConfigError, match="env"):
        await busybox.exec("true", env={"A": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError):  # InvalidConfigError is a ValueError
        await busybox.exec("")


async def test_large_binary_output(busybox: Sandbox) -> None:
    """10 MiB of random bytes come back intact through a collected exec."""
    size = 10 * 1024 * 1024
    out = await busybox.shell(
        f"head -c {size} /dev/urandom > /tmp/blob && sha256sum /tmp/blob | cut -d' ' -f1"
    )
    digest = out.stdout().strip()
    out = await busybox.exec("cat", ["/tmp/blob"])
    assert len(out.stdout_bytes) == size
    assert hashlib.sha256(out.stdout_bytes).hexdigest() == digest


async def test_python_image(python_sb: Sandbox) -> None:
    out = await python_sb.exec("python3", ["-c", "import sys; print(sys.version_info[0])"])
    assert out.stdout() == "3\n"
