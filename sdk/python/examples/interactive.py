"""Drive an interactive program through stdin, then collect the rest with wait()."""

import asyncio

from microsandbox import Sandbox, StdoutEvent

PROGRAM = """
import sys
for line in sys.stdin:
    print(f"{line.strip()[::-1]}", flush=True)
print("bye")
"""


async def main() -> None:
    async with await Sandbox.create("interactive-example", image="python") as sb:
        handle = await sb.exec_stream("python3", ["-c", PROGRAM], stdin_pipe=True)
        for word in ["hello", "sandbox"]:
            await handle.write_stdin(f"{word}\n")
            async for event in handle.events():
                if isinstance(event, StdoutEvent):
                    print(f"{word} -> {event.data.decode().strip()}")
                    break
        await handle.close_stdin()
        rest = await handle.wait(timeout=10)
        print(rest.stdout().strip(), f"(exit {rest.exit_code})")


asyncio.run(main())
