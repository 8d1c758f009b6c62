"""A server stopped and started again during a batch: every item completes (real vLLM)."""

from __future__ import annotations

import threading
import time

import pytest

from launch.background import ServerHandle
from launch.demo import TINY_SERVE_ARGS, demo_image
from qvl_client import Result, RetryPolicy, VisionClient
from tests.conftest import free_port

pytestmark = pytest.mark.e2e


def test_every_item_completes_across_a_restart(tiny_model_dir, tmp_path):
    port = free_port()

    def server(n):
        return ServerHandle(["--model", str(tiny_model_dir), *TINY_SERVE_ARGS], port=port,
                            log_path=tmp_path / f"server{n}.log")

    first = server(1).start()
    first.wait_ready(timeout=600)
    client = VisionClient(first.base_url, extra_body={"ignore_eos": True},
                          retry=RetryPolicy(max_retries=60, backoff_s=0.5, max_backoff_s=3.0))
    items = [(demo_image(256, 192, i), f"Item {i}") for i in range(40)]
    out: list = []
    # long answers keep requests in flight when the server goes away
    worker = threading.Thread(target=lambda: out.extend(
        client.batch(items, concurrency=4, progress=False, max_tokens=200)))
    worker.start()
    time.sleep(2.0)
    assert not out, "the batch finished before the server could be stopped"
    first.kill_hard()  # a crash: in-flight connections are cut, not drained
    second = server(2).start()
    try:
        second.wait_ready(timeout=600)
        worker.join(timeout=600)
        assert not worker.is_alive()
    finally:
        second.stop()
    assert len(out) == 40 and all(isinstance(r, Result) for r in out), [
        getattr(r, "message", "") for r in out if not isinstance(r, Result)]
    assert all(r.usage.completion_tokens == 200 for r in out)
    retried = [r for r in out if r.attempts > 1]
    assert retried, "no request was retried: the restart did not hit the batch"
