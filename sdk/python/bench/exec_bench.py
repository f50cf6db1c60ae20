"""Python SDK overhead benchmark, against the Rust client in the same run.

Measures, on a busybox sandbox of a real agent:

1. ``await sb.exec("true")`` round trip p50/p99 (collected exec), next to the Rust client's
   ``AgentClient::exec`` of the same command on the same sandbox (``bench/examples/exec_rtt.rs``,
   run as a subprocess in blocks alternating with the Python blocks); target: p50 ratio <= 1.3x.
2. create -> first stdout byte of ``echo x`` (``Sandbox.create`` + ``exec_stream``), next to the
   Rust client's (create + exec_stream) for reference.

The agent: the one of ``MSB_STATE_DIR`` (started by the SDK when none runs there; stopped at the
end only if this run started it, unless ``MSB_KEEP_AGENT=1``). Default state directory:
``<repo>/target/bench-python-state``. Knobs: ``MSB_BENCH_EXEC_ITERS`` (300),
``MSB_BENCH_CREATE_ITERS`` (10), ``MSB_BENCH_ISOLATION`` (container), ``MSB_BENCH_RUST_BIN``
(the built ``exec_rtt`` example; without it the Rust side is skipped), ``MSB_BENCH_JSON`` (a
path for the results). Run through ``sdk/python/bench/run.sh``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
os.environ.setdefault("MSB_STATE_DIR", str(REPO / "target" / "bench-python-state"))
os.environ.setdefault("MSB_MIRRORS", "docker.io=127.0.0.1:5000")

from microsandbox import Sandbox, StdoutEvent  # noqa: E402
from microsandbox import _agent  # noqa: E402

IMAGE = "busybox"
EXEC_ITERS = int(os.environ.get("MSB_BENCH_EXEC_ITERS", "300"))
CREATE_ITERS = int(os.environ.get("MSB_BENCH_CREATE_ITERS", "10"))
ISOLATION = os.environ.get("MSB_BENCH_ISOLATION", "container")
RUST_BIN = os.environ.get("MSB_BENCH_RUST_BIN")
BLOCK = 50
WARMUP = 20
TARGET_RATIO = 1.3


def pct(v: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(v)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def summary(v: list[float]) -> dict[str, float]:
    if not v:
        return {}
    return {
        "n": len(v),
        "p50": pct(v, 50),
        "p99": pct(v, 99),
        "mean": statistics.fmean(v),
        "min": min(v),
        "max": max(v),
    }


def rust(args: list[str]) -> dict[str, list[float]]:
    assert RUST_BIN
    out = subprocess.run(
        [RUST_BIN, "--state-dir", os.environ["MSB_STATE_DIR"], *args, "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


async def first_output(name: str) -> float:
    t0 = time.perf_counter()
    sb = await Sandbox.create(name, image=IMAGE, isolation=ISOLATION)  # type: ignore[arg-type]
    try:
        h = await sb.exec_stream("echo", ["x"])
        first = None
        async for ev in h.events():
            if first is None and isinstance(ev, StdoutEvent):
                first = (time.perf_counter() - t0) * 1000
        if first is None:
            raise RuntimeError(f"echo x in {name}: no output")
        return first
    finally:
        await sb.destroy()


async def main() -> dict[str, object]:
    loc = _agent.locate()
    was_running = _agent.healthy(loc.endpoint)
    tag = secrets.token_hex(3)
    py_exec: list[float] = []
    rs_exec: list[float] = []
    py_first: list[float] = []
    rs_first: list[float] = []
    try:
        sb = await Sandbox.create(f"pybench-{tag}", image=IMAGE, isolation=ISOLATION)  # type: ignore[arg-type]
        try:
            print(f"[exec] {EXEC_ITERS} x exec('true'), python and rust alternating in blocks "
                  f"of {BLOCK}", file=sys.stderr)
            for _ in range(WARMUP):
                await sb.exec("true")
            while len(py_exec) < EXEC_ITERS:
                n = min(BLOCK, EXEC_ITERS - len(py_exec))
                for _ in range(n):
                    t = time.perf_counter()
                    out = await sb.exec("true")
                    py_exec.append((time.perf_counter() - t) * 1000)
                    if out.exit_code != 0:
                        raise RuntimeError(f"true failed: {out}")
                if RUST_BIN:
                    r = await asyncio.to_thread(
                        rust, ["--sandbox", sb.name, "--iters", str(n), "--warmup", "5"]
                    )
                    rs_exec += r["exec_ms"]
        finally:
            await sb.destroy()

        print(f"[create] {CREATE_ITERS} x create -> first stdout byte of `echo x`",
              file=sys.stderr)
        for i in range(CREATE_ITERS):
            py_first.append(await first_output(f"pyfirst-{tag}-{i}"))
            if RUST_BIN:
                r = await asyncio.to_thread(
                    rust, ["--first-output", "1", "--image", IMAGE, "--isolation", ISOLATION,
                           "--prefix", f"rsfirst-{tag}-{i}"]
                )
                rs_first += r["first_output_ms"]
    finally:
        if not was_running and os.environ.get("MSB_KEEP_AGENT") != "1":
            pid = _agent.started_agent_pid()
            if pid:
                os.kill(pid, signal.SIGTERM)
    return {
        "exec_true_ms": {"python": summary(py_exec), "rust": summary(rs_exec)},
        "create_first_output_ms": {"python": summary(py_first), "rust": summary(rs_first)},
        "config": {"exec_iters": EXEC_ITERS, "create_iters": CREATE_ITERS,
                   "isolation": ISOLATION, "image": IMAGE},
        "loadavg_at_end": Path("/proc/loadavg").read_text().strip(),
    }


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def table(res: dict[str, dict[str, dict[str, float]]]) -> str:
    rows = [
        ("exec(\"true\") round trip p50", "exec_true_ms", "p50", TARGET_RATIO),
        ("exec(\"true\") round trip p99", "exec_true_ms", "p99", None),
        ("create -> first output p50", "create_first_output_ms", "p50", None),
        ("create -> first output p99", "create_first_output_ms", "p99", None),
    ]
    lines = [
        "| benchmark | python (ms) | rust client (ms) | python/rust | target | ok |",
        "|---|---:|---:|---:|---:|:-:|",
    ]
    for label, key, stat, target in rows:
        py = res[key]["python"].get(stat)
        rs = res[key]["rust"].get(stat)
        ratio = py / rs if py is not None and rs else None
        tgt = f"<= {target}x" if target else "-"
        ok = "-" if target is None or ratio is None else ("yes" if ratio <= target else "NO")
        rat = "n/a" if ratio is None else f"{ratio:.2f}x"
        lines.append(f"| {label} | {_fmt(py)} | {_fmt(rs)} | {rat} | {tgt} | {ok} |")
    return "\n".join(lines)


if __name__ == "__main__":
    results = asyncio.run(main())
    print(table(results))  # type: ignore[arg-type]
    if os.environ.get("MSB_BENCH_JSON"):
        Path(os.environ["MSB_BENCH_JSON"]).write_text(json.dumps(results, indent=2) + "\n")
    ratio_ok = True
    e = results["exec_true_ms"]
    assert isinstance(e, dict)
    if e["rust"]:
        ratio_ok = e["python"]["p50"] / e["rust"]["p50"] <= TARGET_RATIO
    sys.exit(0 if ratio_ok or os.environ.get("MSB_BENCH_NO_FAIL") == "1" else 2)
