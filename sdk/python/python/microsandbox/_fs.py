"""A sandbox's filesystem: ``sb.fs``."""

from __future__ import annotations

import builtins
import os
import stat as _stat
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from . import _native
from .errors import FilesystemPathNotFoundError
from .models import FileStat

if TYPE_CHECKING:
    from .sandbox import Sandbox


class SandboxFs:
    """Files of a sandbox (``sb.fs``). Paths are absolute paths inside the sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox

    @property
    def _c(self) -> _native.Client:
        return self._sb._client

    @property
    def _name(self) -> str:
        return self._sb._target

    async def read(self, path: str) -> bytes:
        """A whole file's contents."""
        data: bytes = await self._c.fs_read(self._name, path)
        return data

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """A whole file's contents, decoded."""
        return (await self.read(path)).decode(encoding)

    async def write(
        self, path: str, data: bytes | str, *, mode: int | None = None, append: bool = False
    ) -> int:
        """Writes ``data`` (``str`` is UTF-8 encoded) to ``path``, created or truncated (or
        appended to with ``append=True``); ``mode`` (e.g. ``0o755``) applies to a new file.
        Returns the bytes written."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        n: int = await self._c.fs_write(self._name, path, raw, mode, append)
        return n

    async def list(self, path: str = "/") -> builtins.list[FileStat]:
        """The entries of a directory."""
        entries = await self._c.fs_list(self._name, path)
        return [FileStat._from_dict(e) for e in entries]

    async def stat(self, path: str) -> FileStat:
        """Metadata of a path (raises :class:`FilesystemPathNotFoundError` if missing)."""
        return FileStat._from_dict(await self._c.fs_stat(self._name, path))

    async def exists(self, path: str) -> bool:
        """Whether the path exists."""
        try:
            await self._c.fs_stat(self._name, path)
            return True
        except FilesystemPathNotFoundError:
            return False

    async def mkdir(self, path: str, *, parents: bool = False) -> None:
        """Creates a directory (with ``parents=True``, its missing parents too, and no error if
        it exists)."""
        await self._c.fs_mkdir(self._name, path, parents)

    async def remove(self, path: str, *, recursive: bool = False) -> None:
        """Removes a file, or a directory (non-empty ones need ``recursive=True``)."""
        await self._c.fs_remove(self._name, path, recursive)

    async def rename(self, src: str, dst: str) -> None:
        """Renames (moves) a path inside the sandbox."""
        await self._c.fs_rename(self._name, src, dst)

    async def copy(self, src: str, dst: str) -> None:
        """Copies a path inside the sandbox."""
        await self._c.fs_copy(self._name, src, dst)

    async def copy_from_host(self, host_path: str | os.PathLike[str], guest_path: str) -> int:
        """Copies a host file or directory tree into the sandbox, streaming file contents.
        Returns the bytes copied."""
        src = Path(host_path)
        try:
            st = src.stat()
        except FileNotFoundError:
            raise FileNotFoundError(f"no such host file or directory: {src}") from None
        if not _stat.S_ISDIR(st.st_mode):
            n: int = await self._c.fs_write_from_file(self._name, str(src), guest_path)
            return n
        total = 0
        await self.mkdir(guest_path, parents=True)
        for root, dirs, files in os.walk(src):
            rel = Path(root).relative_to(src)
            gdir = str(PurePosixPath(guest_path, *rel.parts))
            for d in dirs:
                await self.mkdir(str(PurePosixPath(gdir, d)), parents=True)
            for f in files:
                hp = Path(root, f)
                if hp.is_symlink() and not hp.exists():
                    continue
                total += await self._c.fs_write_from_file(
                    self._name, str(hp), str(PurePosixPath(gdir, f))
                )
        return total

    async def copy_to_host(self, guest_path: str, host_path: str | os.PathLike[str]) -> int:
        """Copies a sandbox file or directory tree to the host, streaming file contents.
        Returns the bytes copied."""
        st = await self.stat(guest_path)
        dst = Path(host_path)
        if st.kind != "dir":
            n: int = await self._c.fs_read_to_file(self._name, guest_path, str(dst))
            return n
        total = 0
        dst.mkdir(parents=True, exist_ok=True)
        for entry in await self.list(guest_path):
            child = str(PurePosixPath(guest_path, entry.name))
            if entry.kind == "dir":
                total += await self.copy_to_host(child, dst / entry.name)
            elif entry.kind == "file":
                total += await self._c.fs_read_to_file(self._name, child, str(dst / entry.name))
        return total
