"""`qvl ray`: a real Ray head and worker, started by the project's own commands on this machine,
form a cluster that the head waits for. vLLM's CPU build cannot run the Ray executor (its CPU
platform has no Ray device key: "current platform cpu does not support ray"), so the serving
step is checked for its clear refusal here and on GPUs only in the benchmarks."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.e2e
QVL = [sys.executable, "-m", "launch.cli", "ray"]


def _lines_until(proc, needle: str, timeout: float) -> list[str]:
    seen, t0 = [], time.monotonic()
    while time.monotonic() - t0 < timeout:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} not seen in {timeout} s:\n{''.join(seen)}")


def test_head_waits_for_the_worker_then_stops_ray():
    port = free_port()
    head = subprocess.Popen([*QVL, "head", "--port", str(port), "--num-cpus", "1",
                             "--num-gpus", "0", "--expect-nodes", "2", "--timeout", "240"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    worker = None
    try:
        out = _lines_until(head, "waiting for 2 node(s)", 120)
        assert any(f"qvl ray worker --address 127.0.0.1:{port}" in ln for ln in out)
        assert head.poll() is None  # still waiting: one node is not a cluster of two
        worker = subprocess.Popen([*QVL, "worker", "--address", f"127.0.0.1:{port}",
                                   "--num-cpus", "1", "--num-gpus", "0"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out = _lines_until(head, "cluster ready: 2 node(s)", 180)
        status = subprocess.run([*QVL, "status", "--address", f"127.0.0.1:{port}"],
                                capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, status.stderr
        assert '"nodes": 2' in status.stdout and '"cpus": 2' in status.stdout
        worker.send_signal(signal.SIGTERM)  # as a pod or systemd stops it
        assert worker.wait(timeout=90) is not None
        head.send_signal(signal.SIGTERM)
        assert head.wait(timeout=120) == 0
        assert "Ray stopped on this node" in head.stdout.read()
    finally:
        for p in (head, worker):
            if p and p.poll() is None:
                p.kill()
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"],
                       capture_output=True)


def test_missing_nodes_time_out_with_the_command_to_run():
    port = free_port()
    r = subprocess.run([*QVL, "head", "--port", str(port), "--num-cpus", "1", "--num-gpus",
                        "0", "--expect-nodes", "2", "--timeout", "5"],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 1
    assert "has 1 node(s)" in r.stderr and "expected 2 node(s)" in r.stderr
    assert f"qvl ray worker --address 127.0.0.1:{port}" in r.stderr


def test_serving_on_the_cpu_build_is_refused_before_ray_starts(tiny_model_dir):
    r = subprocess.run([*QVL, "head", "--port", str(free_port()), "--", "--profile",
                        "cpu-tiny", "--model", str(tiny_model_dir)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "CPU build cannot use the Ray executor" in r.stderr
    assert "Ray head up" not in r.stdout


def test_bad_parallel_sizes_are_refused_against_the_checkpoint(tiny_model_dir):
    r = subprocess.run([*QVL, "head", "--port", str(free_port()), "--", "--model",
                        str(tiny_model_dir), "--tensor-parallel-size", "3"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "--tensor-parallel-size 3 does not divide" in r.stderr
