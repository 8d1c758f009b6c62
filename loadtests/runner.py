"""The open-loop load runner: async HTTP streaming, arrivals like `vllm bench serve`.

Arrivals: at `rate` requests/s with gamma-distributed gaps (burstiness 1.0 = Poisson), or all at
once (rate = inf); `concurrency` caps requests in flight; both may be combined. Each request's
TTFT/ITL/latency is timed exactly as vLLM's openai-chat client does (see metrics.py). Warm-up
requests run first and are not recorded. Several URLs (replicas of one server): each request
goes to the one with the fewest requests in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable

import aiohttp
import numpy as np

from loadtests.metrics import RequestRecord
from loadtests.workload import BenchRequest


async def send(session: aiohttp.ClientSession, url: str, req: BenchRequest,
               headers: dict) -> RequestRecord:
    rec = RequestRecord(success=False, images=req.images)
    st = time.perf_counter()
    rec.start_time = st
    last = st
    first = False
    try:
        async with session.post(url, json=req.body, headers=headers) as resp:
            if resp.status != 200:
                rec.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                return rec
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while b"\n\n" in buf:
                    message, buf = buf.split(b"\n\n", 1)
                    message = message.strip()
                    if not message or message.startswith(b":"):
                        continue
                    data = message.removeprefix(b"data: ")
                    if data == b"[DONE]":
                        continue
                    ts = time.perf_counter()
                    obj = json.loads(data)
                    if obj.get("choices"):
                        if not first:
                            first = True
                            rec.ttft = ts - st
                        else:
                            rec.itl.append(ts - last)
                        last = ts
                    elif usage := obj.get("usage"):
                        rec.output_tokens = usage.get("completion_tokens") or 0
                        rec.prompt_len = usage.get("prompt_tokens") or 0
        rec.success = first
        if not first:
            rec.error = "no chunk with choices received"
        rec.latency = last - st
    except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as e:
        rec.error = f"{type(e).__name__}: {e}"
    return rec


def arrival_delays(n: int, rate: float, burstiness: float, seed: int) -> list[float]:
    """Start offsets (s) of n requests: cumulative gamma gaps, mean 1/rate (vLLM's scheme)."""
    if math.isinf(rate):
        return [0.0] * n
    theta = 1.0 / (rate * burstiness)
    gaps = np.random.default_rng(seed).gamma(shape=burstiness, scale=theta, size=n)
    return list(np.cumsum(gaps) - gaps[0])


class LiveProgress:
    """One status line, refreshed twice a second, while a level runs."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.total, self.label, self.enabled = total, label, enabled
        self.sent = self.done = self.failed = 0
        self.t0 = time.perf_counter()

    def line(self) -> str:
        el = time.perf_counter() - self.t0
        return (f"\r{self.label}: {self.done}/{self.total} done, {self.sent - self.done} in "
                f"flight, {self.failed} failed, {el:5.1f} s, {self.done / max(el, 1e-9):6.2f} req/s")

    async def run(self) -> None:
        while self.enabled:
            sys.stderr.write(self.line())
            sys.stderr.flush()
            await asyncio.sleep(0.5)

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write(self.line() + "\n")


async def run_level(url: str | list[str], requests: list[BenchRequest], *,
                    concurrency: int | None = None,
                    rate: float = math.inf, burstiness: float = 1.0, seed: int = 0,
                    api_key: str | None = None, warmup: list[BenchRequest] | None = None,
                    progress: bool = False, label: str = "",
                    on_start: Callable[[], None] | None = None,
                    timeout_s: float = 600) -> tuple[list[RequestRecord], float]:
    """Run one load level; returns (records, benchmark duration in seconds)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    tmo = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=conn, timeout=tmo, trust_env=False) as session:
        sem = asyncio.Semaphore(concurrency) if concurrency else None
        in_flight = dict.fromkeys([url] if isinstance(url, str) else url, 0)

        async def limited(req: BenchRequest, prog: LiveProgress | None) -> RequestRecord:
            async with sem or contextlib.nullcontext():
                if prog:
                    prog.sent += 1
                target = min(in_flight, key=in_flight.__getitem__)  # least outstanding
                in_flight[target] += 1
                try:
                    rec = await send(session, target, req, headers)
                finally:
                    in_flight[target] -= 1
            if prog:
                prog.done += 1
                prog.failed += 0 if rec.success else 1
            return rec

        if warmup:
            await asyncio.gather(*(limited(r, None) for r in warmup))
        prog = LiveProgress(len(requests), label, progress)
        ticker = asyncio.create_task(prog.run())
        if on_start:
            on_start()
        delays = arrival_delays(len(requests), rate, burstiness, seed)
        t0 = time.perf_counter()
        tasks = []
        for req, delay in zip(requests, delays):
            wait = t0 + delay - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(limited(req, prog)))
        records = await asyncio.gather(*tasks)
        duration = time.perf_counter() - t0
        prog.enabled = False
        ticker.cancel()
        prog.close()
    return list(records), duration
