"""Exec latency of the Python SDK: exec("true") N times in one sandbox; prints
``python p50_ms p99_ms create_ms stream_mib_s`` (the last: 64 MiB of stdout streamed).
bench/sdks.sh compares every SDK against Rust's."""

import asyncio
import os
import sys
import time

from microsandbox import Sandbox, StdoutEvent


CREATES = 7  # create -> first output: the median of this many sandboxes (one is noise)


async def main(n: int) -> None:
    name = f"bench-py-{os.getpid()}"
    creates = []
    for _ in range(CREATES):
        t0 = time.perf_counter()
        tmp = await Sandbox.create(name, image="busybox", memory=128, isolation="container")
        assert (await tmp.exec("echo", ["hi"])).stdout() == "hi\n"
        creates.append((time.perf_counter() - t0) * 1e3)
        await tmp.destroy()
    create_ms = sorted(creates)[CREATES // 2]
    sb = await Sandbox.create(name, image="busybox", memory=128, isolation="container")
    try:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            await sb.exec("true")
            times.append((time.perf_counter() - t) * 1e3)
        times.sort()

        def p(q: float) -> float:
            return times[round((len(times) - 1) * q)]

        t = time.perf_counter()
        handle = await sb.exec_stream("head", ["-c", "67108864", "/dev/zero"])
        n_bytes = 0
        async for ev in handle.events():
            if isinstance(ev, StdoutEvent):
                n_bytes += len(ev.data)
        assert n_bytes == 64 << 20, n_bytes
        mib_s = 64 / (time.perf_counter() - t)
        print(f"python {p(0.5):.3f} {p(0.99):.3f} {create_ms:.1f} {mib_s:.0f}")
    finally:
        await sb.destroy()


asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
