"""sb.fs: read/write/list/stat/mkdir/remove/rename/copy, and streamed host copies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from microsandbox import FileStat, FilesystemError, FilesystemPathNotFoundError, Sandbox


async def test_read_write_roundtrip(busybox: Sandbox) -> None:
    assert await busybox.fs.write("/tmp/a.txt", "héllo\n") == 7
    assert await busybox.fs.read("/tmp/a.txt") == "héllo\n".encode()
    assert await busybox.fs.read_text("/tmp/a.txt") == "héllo\n"
    await busybox.fs.write("/tmp/a.txt", b"more", append=True)
    assert await busybox.fs.read("/tmp/a.txt") == "héllo\nmore".encode()
    # Visible to commands, and the other way round.
    assert (await busybox.exec("cat", ["/tmp/a.txt"])).stdout() == "héllo\nmore"
    await busybox.shell("printf '\\001\\002' > /tmp/b.bin")
    assert await busybox.fs.read("/tmp/b.bin") == b"\x01\x02"


async def test_mode_stat_list(busybox: Sandbox) -> None:
    await busybox.fs.write("/tmp/run.sh", "#!/bin/sh\necho ran\n", mode=0o755)
    st = await busybox.fs.stat("/tmp/run.sh")
    assert isinstance(st, FileStat)
    assert st.is_file and st.size == 19 and st.mode & 0o777 == 0o755 and st.name == "run.sh"
    assert (await busybox.exec("/tmp/run.sh")).stdout() == "ran\n"
    await busybox.fs.mkdir("/tmp/d/e/f", parents=True)
    await busybox.fs.write("/tmp/d/x", "1")
    entries = {e.name: e for e in await busybox.fs.list("/tmp/d")}
    assert set(entries) == {"e", "x"}
    assert entries["e"].is_dir and entries["x"].is_file
    assert (await busybox.fs.stat("/tmp/d")).is_dir


async def test_exists_remove_rename_copy(busybox: Sandbox) -> None:
    fs = busybox.fs
    assert not await fs.exists("/tmp/nope")
    await fs.write("/tmp/src", "data")
    await fs.copy("/tmp/src", "/tmp/copy")
    await fs.rename("/tmp/src", "/tmp/moved")
    assert not await fs.exists("/tmp/src")
    assert await fs.read_text("/tmp/moved") == "data" == await fs.read_text("/tmp/copy")
    await fs.remove("/tmp/moved")
    assert not await fs.exists("/tmp/moved")
    await fs.mkdir("/tmp/tree/sub", parents=True)
    await fs.write("/tmp/tree/sub/f", "x")
    with pytest.raises(FilesystemError):
        await fs.remove("/tmp/tree")  # not empty
    await fs.remove("/tmp/tree", recursive=True)
    assert not await fs.exists("/tmp/tree")


async def test_missing_paths_raise_typed_errors(busybox: Sandbox) -> None:
    with pytest.raises(FilesystemPathNotFoundError) as e:
        await busybox.fs.read("/no/such/file")
    assert e.value.code == "path_not_found" and isinstance(e.value, FileNotFoundError)
    with pytest.raises(FilesystemPathNotFoundError):
        await busybox.fs.stat("/no/such/file")
    with pytest.raises(FilesystemPathNotFoundError):
        await busybox.fs.list("/no/such/dir")
    with pytest.raises(FilesystemPathNotFoundError):
        await busybox.fs.write("/no/such/dir/file", "x")


async def test_copy_file_between_host_and_guest(busybox: Sandbox, tmp_path: Path) -> None:
    blob = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "blob.bin"
    src.write_bytes(blob)
    src.chmod(0o640)
    assert await busybox.fs.copy_from_host(src, "/tmp/blob.bin") == len(blob)
    st = await busybox.fs.stat("/tmp/blob.bin")
    assert st.size == len(blob) and st.mode & 0o777 == 0o640
    dst = tmp_path / "back.bin"
    assert await busybox.fs.copy_to_host("/tmp/blob.bin", dst) == len(blob)
    assert dst.read_bytes() == blob
    with pytest.raises(FileNotFoundError, match="no such host file"):
        await busybox.fs.copy_from_host(tmp_path / "missing", "/tmp/x")
    with pytest.raises(FilesystemPathNotFoundError):
        await busybox.fs.copy_to_host("/no/such/file", tmp_path / "never")
    assert not (tmp_path / "never").exists()


async def test_copy_directory_trees(busybox: Sandbox, tmp_path: Path) -> None:
    src = tmp_path / "proj"
    (src / "pkg" / "sub").mkdir(parents=True)
    (src / "README").write_text("readme")
    (src / "pkg" / "mod.py").write_text("x = 1\n")
    (src / "pkg" / "sub" / "data.bin").write_bytes(b"\x00" * 1000)
    n = await busybox.fs.copy_from_host(src, "/work/proj")
    assert n == 6 + 6 + 1000
    out = await busybox.shell("cd /work/proj && find . -type f | sort")
    assert out.stdout().split() == ["./README", "./pkg/mod.py", "./pkg/sub/data.bin"]
    back = tmp_path / "back"
    assert await busybox.fs.copy_to_host("/work/proj", back) == n
    assert (back / "pkg" / "mod.py").read_text() == "x = 1\n"
    assert (back / "pkg" / "sub" / "data.bin").read_bytes() == b"\x00" * 1000
