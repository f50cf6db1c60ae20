"""Every example runs as written (against the session's agent)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True, text=True, timeout=120, env=os.environ.copy(),
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_streaming() -> None:
    out = run("streaming.py")
    assert out.splitlines()[:5] == [f"request {i}" for i in range(1, 6)]
    assert "tail ended (code 137, signal 9)" in out


def test_files() -> None:
    out = run("files.py")
    assert "result: {\"squares\": [0, 1, 4, 9, 16]}" in out
    assert "/app/project" in out and "/app/result.json" in out


def test_interactive() -> None:
    assert run("interactive.py").splitlines() == [
        "hello -> olleh", "sandbox -> xobdnas", "bye (exit 0)",
    ]


def test_detached() -> None:
    try:
        assert "created it" in run("detached.py")
        assert "counter file says 1" in run("detached.py")
        assert "counter file says 2" in run("detached.py")
    finally:
        assert run("detached.py", "cleanup").strip() == "removed"


def test_repl() -> None:
    assert run("repl.py").splitlines() == [
        "area: 12.57",
        "error: ZeroDivisionError: division by zero",
        "uname: Linux (exit 0)",
    ]


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_is_covered(script: str) -> None:
    assert f"def test_{script.removesuffix('.py')}" in Path(__file__).read_text() or \
        script == "hello.py"  # tests/test_hello.py


def test_bench_exec() -> None:
    name, p50, p99, create_ms, mib_s = run("bench_exec.py", "20").split()
    assert name == "python"
    assert 0 < float(p50) <= float(p99) and float(create_ms) > 0 and float(mib_s) > 0
