"""The earlier API: a Python interpreter whose state persists between runs."""

import asyncio

from microsandbox import PythonSandbox


async def main() -> None:
    async with PythonSandbox.create(name="repl-example") as sb:
        await sb.run("import math\nradius = 2")
        execution = await sb.run("print(f'area: {math.pi * radius ** 2:.2f}')")
        print(await execution.output())  # trailing newline stripped, as upstream

        execution = await sb.run("1 / 0")
        if execution.has_error():
            print("error:", (await execution.error()).strip().splitlines()[-1])

        result = await sb.command.run("uname", ["-s"])
        print("uname:", (await result.output()).strip(), f"(exit {result.exit_code})")


asyncio.run(main())
