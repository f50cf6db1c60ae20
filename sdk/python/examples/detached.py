"""A detached sandbox outlives the process that created it; another process finds it by name."""

import asyncio
import sys

from microsandbox import Sandbox, SandboxNotFoundError


async def main() -> None:
    if sys.argv[1:] == ["cleanup"]:
        await Sandbox.remove("detached-example")
        print("removed")
        return
    try:
        sb = await Sandbox.get("detached-example")
        print("found it; counter file says", (await sb.fs.read_text("/tmp/counter")).strip())
        await sb.shell("echo $(( $(cat /tmp/counter) + 1 )) > /tmp/counter")
    except SandboxNotFoundError:
        sb = await Sandbox.create_detached("detached-example", image="python")
        await sb.fs.write("/tmp/counter", "1\n")
        print("created it; run me again (or with `cleanup`)")


asyncio.run(main())
