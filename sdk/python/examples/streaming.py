"""Follow a log file as it grows (`tail -f`), with structural pattern matching on the events."""

import asyncio
import sys

from microsandbox import ExitedEvent, Sandbox, StderrEvent, StdoutEvent


async def main() -> None:
    async with await Sandbox.create("streaming-example", image="python") as sb:
        await sb.fs.mkdir("/var/log", parents=True)
        await sb.fs.write("/var/log/app.log", "")
        # Something in the sandbox writes to the log...
        script = "for i in 1 2 3 4 5; do echo request $i >> /var/log/app.log; sleep 0.2; done"
        writer = await sb.exec_stream("sh", ["-c", script])
        # ...and we follow it until we have seen five lines.
        handle = await sb.exec_stream("tail", ["-f", "/var/log/app.log"])
        lines = 0
        async for event in handle.events():
            match event:
                case StdoutEvent(data=data):
                    sys.stdout.buffer.write(data)
                    sys.stdout.flush()
                    lines += data.count(b"\n")
                    if lines >= 5:
                        await handle.kill()
                case StderrEvent(data=data):
                    sys.stderr.buffer.write(data)
                case ExitedEvent(code=code, signal=signal):
                    print(f"tail ended (code {code}, signal {signal})")
                    break
        await writer.wait()


asyncio.run(main())
