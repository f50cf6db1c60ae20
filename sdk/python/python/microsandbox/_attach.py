"""``Sandbox.attach()``: an interactive command on the caller's terminal."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .errors import InvalidConfigError
from .models import ExitedEvent, StderrEvent, StdoutEvent

if TYPE_CHECKING:
    from .sandbox import Sandbox


async def attach_terminal(
    sb: Sandbox,
    command: str,
    args: Sequence[str] | None,
    *,
    env: Mapping[str, str] | None,
    cwd: str | None,
) -> int:
    """Runs ``command`` in a sandbox tty wired to this process's terminal; returns its exit
    code (128 + signal if a signal killed it)."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    if not os.isatty(fd):
        raise InvalidConfigError("attach() needs a terminal on stdin; use exec_stream() instead")
    size = shutil.get_terminal_size()
    handle = await sb.exec_stream(
        command, args, tty=(size.lines, size.columns), stdin_pipe=True, env=env, cwd=cwd
    )
    loop = asyncio.get_running_loop()
    keys: asyncio.Queue[bytes] = asyncio.Queue()
    saved = termios.tcgetattr(fd)

    def on_input() -> None:
        try:
            keys.put_nowait(os.read(fd, 4096))
        except OSError:
            keys.put_nowait(b"")

    def on_winch() -> None:
        s = shutil.get_terminal_size()
        loop.create_task(handle.resize(s.lines, s.columns))

    async def pump() -> None:
        while True:
            data = await keys.get()
            if not data:
                await handle.close_stdin()
                return
            await handle.write_stdin(data)

    tty.setraw(fd)
    loop.add_reader(fd, on_input)
    loop.add_signal_handler(signal.SIGWINCH, on_winch)
    pumper = loop.create_task(pump())
    code = 0
    try:
        async for ev in handle.events():
            if isinstance(ev, StdoutEvent):
                os.write(sys.stdout.fileno(), ev.data)
            elif isinstance(ev, StderrEvent):
                os.write(sys.stderr.fileno(), ev.data)
            elif isinstance(ev, ExitedEvent):
                code = ev.code if ev.signal is None else 128 + ev.signal
    finally:
        pumper.cancel()
        loop.remove_reader(fd)
        loop.remove_signal_handler(signal.SIGWINCH)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        if not handle.done:
            await handle.kill()
    return code
