"""Benchmark: is the load generator the bottleneck? Streamed requests per second that one core
of `qvl bench`'s runner sustains against a fast local endpoint (target >= 1000).

The endpoint is a minimal aiohttp SSE server on the other core that answers every chat request
at once with N content chunks plus a usage chunk, like vLLM's stream. Both are pinned to their
own core (Linux), so the number is the runner's, not the server's.

    python -m loadtests.bench_runner_core --out loadtests/results/runner-core.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path


def serve(port: int, chunks: int, core: int | None) -> None:
    from aiohttp import web

    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    piece = json.dumps({"id": "x", "object": "chat.completion.chunk", "model": "m",
                        "choices": [{"index": 0, "delta": {"content": "tok"}}]})
    usage = json.dumps({"id": "x", "object": "chat.completion.chunk", "model": "m",
                        "choices": [], "usage": {"prompt_tokens": 100,
                                                 "completion_tokens": chunks}})
    body = ("".join(f"data: {piece}\n\n" for _ in range(chunks)) + f"data: {usage}\n\n"
            "data: [DONE]\n\n").encode()

    async def chat(request):
        await request.read()
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(body)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--concurrency", type=int, default=128)
    ap.add_argument("--chunks", type=int, default=16)
    ap.add_argument("--port", type=int, default=18731)
    ap.add_argument("--out", default="loadtests/results/runner-core.json")
    a = ap.parse_args()
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [None]
    srv_core = cores[-1] if len(cores) > 1 else None
    proc = mp.get_context("spawn").Process(target=serve, args=(a.port, a.chunks, srv_core),
                                           daemon=True)
    proc.start()
    if len(cores) > 1:
        os.sched_setaffinity(0, {cores[0]})
    from loadtests.metrics import summarize
    from loadtests.runner import run_level
    from loadtests.workload import BenchRequest

    url = f"http://127.0.0.1:{a.port}/v1/chat/completions"
    req = BenchRequest({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                        "stream": True, "max_tokens": a.chunks}, 1)
    for _ in range(100):  # wait for the server
        try:
            asyncio.run(run_level(url, [req], concurrency=1))
            break
        except Exception:  # noqa: BLE001
            time.sleep(0.1)
    asyncio.run(run_level(url, [req] * 500, concurrency=a.concurrency))  # warm-up
    t0 = time.process_time()
    records, dur = asyncio.run(run_level(url, [req] * a.requests, concurrency=a.concurrency))
    cpu = time.process_time() - t0
    proc.terminate()
    s = summarize(records, dur)
    result = {
        "benchmark": "runner-core", "command": "python -m loadtests.bench_runner_core "
        + " ".join(sys.argv[1:]), "machine": f"{platform.node()} {platform.machine()}, "
        f"{os.cpu_count()} cores, python {platform.python_version()}",
        "runner_core": cores[0], "server_core": srv_core, "requests": a.requests,
        "concurrency": a.concurrency, "chunks_per_request": a.chunks,
        "completed": s["completed"], "failed": s["failed"], "duration_s": round(dur, 3),
        "runner_cpu_s": round(cpu, 3),
        "streamed_requests_per_s": round(s["request_throughput"], 1),
        "requests_per_runner_cpu_s": round(s["completed"] / cpu, 1),
        "chunks_per_s": round(s["completed"] * (a.chunks + 1) / dur, 0),
        "target_requests_per_s": 1000, "date": time.strftime("%Y-%m-%d"),
    }
    result["meets_target"] = result["streamed_requests_per_s"] >= 1000 and s["failed"] == 0
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
