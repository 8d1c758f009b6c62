"""Engine death while serving: `qvl serve` restarts vLLM and serves again (real vLLM)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import pytest

from tests.conftest import SERVED_NAME, start_tiny_server

pytestmark = pytest.mark.e2e


def engine_core_pids(root_pid: int) -> list[int]:
    """EngineCore processes below `root_pid` only (other tests' servers may be running)."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    rows = [ln.split(None, 2) for ln in out.splitlines() if ln.strip()]
    parent = {int(r[0]): int(r[1]) for r in rows}

    def below(pid: int) -> bool:
        while pid > 1:
            pid = parent.get(pid, 0)
            if pid == root_pid:
                return True
        return False

    return [int(r[0]) for r in rows if len(r) == 3 and "VLLM::EngineCore" in r[2]
            and below(int(r[0]))]


def chat(base_url: str) -> int:
    r = httpx.post(f"{base_url}/chat/completions", timeout=60, json={
        "model": SERVED_NAME, "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4, "ignore_eos": True})
    return r.status_code


def test_killed_engine_is_restarted_and_clients_see_no_failure(tiny_model_dir, tmp_path):
    """Engine death under load: qvl serve restarts vLLM, the project's client retries, every
    call of a batch succeeds; the gap (kill -> serving again) is measured."""
    import threading

    from launch.demo import demo_image
    from qvl_client import Result, RetryPolicy, VisionClient

    server = start_tiny_server(tiny_model_dir, tmp_path, "--max-restarts", "2", name="restart")
    try:
        assert chat(server.base_url) == 200
        client = VisionClient(server.base_url, extra_body={"ignore_eos": True},
                              retry=RetryPolicy(max_retries=100, backoff_s=0.5,
                                                max_backoff_s=3.0))
        items = [(demo_image(256, 192, i), f"Item {i}") for i in range(24)]
        out: list = []
        worker = threading.Thread(target=lambda: out.extend(
            client.batch(items, concurrency=4, progress=False, max_tokens=200)))
        worker.start()
        time.sleep(2.0)
        assert not out, "the batch finished before the engine could be killed"
        pids = engine_core_pids(server.proc.pid)
        assert pids, "no EngineCore process found"
        t0 = time.monotonic()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        # vLLM's API server notices (EngineDeadError) and exits; qvl serve restarts it
        deadline = time.monotonic() + 400
        went_down = False
        while time.monotonic() < deadline:
            try:
                ok = httpx.get(f"{server.root_url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                ok = False
            went_down |= not ok
            if went_down and ok and chat(server.base_url) == 200:
                break
            time.sleep(0.5)
        else:
            pytest.fail("server did not come back:\n" + server.log_tail(60))
        gap = time.monotonic() - t0
        worker.join(timeout=600)
        assert not worker.is_alive()
        assert len(out) == 24 and all(isinstance(r, Result) for r in out), [
            getattr(r, "message", "") for r in out if not isinstance(r, Result)]
        assert all(r.usage.completion_tokens == 200 for r in out)
        assert any(r.attempts > 1 for r in out), "no call was retried: the kill missed the batch"
        log = server.log_path.read_text()
        assert "exited unexpectedly" in log and "restarting vLLM (1/2)" in log
        assert server.proc.poll() is None  # the supervisor itself never died
        print(f"restart gap {gap:.1f} s (engine killed -> serving again)")
        assert gap < 300
    finally:
        assert server.stop() == 0
