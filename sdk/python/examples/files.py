"""Move files in and out of a sandbox, and run what was copied in."""

import asyncio
import tempfile
from pathlib import Path

from microsandbox import Sandbox


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp, "project")
        project.mkdir()
        (project / "main.py").write_text(
            "import json\nprint(json.dumps({'squares': [i * i for i in range(5)]}))\n"
        )

        async with await Sandbox.create("files-example", image="python", workdir="/app") as sb:
            copied = await sb.fs.copy_from_host(project, "/app/project")
            print(f"copied {copied} bytes in")

            out = await sb.exec("python3", ["project/main.py"])
            await sb.fs.write("/app/result.json", out.stdout_bytes)

            for entry in await sb.fs.list("/app"):
                print(f"{entry.kind:4} {entry.size:6} {entry.path}")

            await sb.fs.copy_to_host("/app/result.json", Path(tmp, "result.json"))
            print("result:", Path(tmp, "result.json").read_text().strip())


asyncio.run(main())
