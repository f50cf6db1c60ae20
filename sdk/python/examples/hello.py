"""The SDK in five lines: create a sandbox, run Python in it, stop it."""

import asyncio

from microsandbox import Sandbox


async def main() -> None:
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


asyncio.run(main())
