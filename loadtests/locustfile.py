"""Locust users for qvl: the same workloads as `qvl bench`, streaming, with TTFT and ITL
reported as their own entries next to the whole request.

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000            # web UI
    locust -f loadtests/locustfile.py --host ... --headless -u 16 -r 4 -t 60s --csv out/run
    locust -f loadtests/locustfile.py --master  /  --worker --master-host HOST  # distributed

Settings come from the environment (read by every worker): QVL_MODEL (default: the server's
first), QVL_API_KEY, QVL_IMAGE_SIZE (1024x768), QVL_IMAGES (1), QVL_TEXT_TOKENS (50),
QVL_OUTPUT_TOKENS (128), QVL_REUSE_RATIO (0), QVL_WORKLOAD_FILE (JSONL, instead of synthetic),
QVL_POOL (distinct requests pre-built per user, 16).
"""

from __future__ import annotations

import itertools
import json
import os
import time

from locust import HttpUser, between, events, task

from loadtests.workload import Workload, build_requests, load_jsonl
from qvl_client.vision import parse_size


def _workload() -> Workload:
    w, h = parse_size(os.environ.get("QVL_IMAGE_SIZE", "1024x768"))
    return Workload(image_width=w, image_height=h,
                    images_per_request=int(os.environ.get("QVL_IMAGES", "1")),
                    text_tokens=int(os.environ.get("QVL_TEXT_TOKENS", "50")),
                    output_tokens=int(os.environ.get("QVL_OUTPUT_TOKENS", "128")),
                    reuse_ratio=float(os.environ.get("QVL_REUSE_RATIO", "0")))


class VisionChatUser(HttpUser):
    """One user: streams chat completions with images, back to back (closed loop)."""

    wait_time = between(0, 0)
    _users = itertools.count()

    def on_start(self) -> None:
        key = os.environ.get("QVL_API_KEY")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        model = os.environ.get("QVL_MODEL") or self.client.get(
            "/v1/models", headers=self.headers).json()["data"][0]["id"]
        pool = int(os.environ.get("QVL_POOL", "16"))
        if os.environ.get("QVL_WORKLOAD_FILE"):
            reqs = load_jsonl(os.environ["QVL_WORKLOAD_FILE"], model)
        else:  # a different slice of seeds per user: unique images across users
            reqs = build_requests(_workload(), model, pool, offset=next(self._users) * pool)
        self.requests = itertools.cycle(reqs)

    def _event(self, name: str, ms: float, length: int = 0, exc: Exception | None = None):
        events.request.fire(request_type="STREAM", name=name, response_time=ms,
                            response_length=length, exception=exc, context={})

    @task
    def chat(self) -> None:
        req = next(self.requests)
        t0 = time.perf_counter()
        first = last = None
        output_tokens = 0
        with self.client.post("/v1/chat/completions", json=req.body, headers=self.headers,
                              stream=True, catch_response=True,
                              name="/v1/chat/completions (stream)") as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            for line in resp.iter_lines():
                if not line or not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                obj = json.loads(line[6:])
                now = time.perf_counter()
                if obj.get("choices"):
                    if first is None:
                        first = now
                        self._event("TTFT", (now - t0) * 1000)
                    else:
                        self._event("ITL", (now - last) * 1000)
                    last = now
                elif obj.get("usage"):
                    output_tokens = obj["usage"].get("completion_tokens") or 0
            if first is None:
                resp.failure("no token received")
            else:
                resp.success()
                if output_tokens > 1:
                    self._event("TPOT", (last - first) * 1000 / (output_tokens - 1))
