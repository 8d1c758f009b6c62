"""The pieces behind the GPU comparisons: variant arguments, replicas, server-side timings and
per-process CPU. The HTTP endpoints here are small local stand-ins for load distribution only;
the runner against the real vLLM server is tested in test_bench_e2e.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
from aiohttp import web

from loadtests.gpu_compare import configs, override, parse_variant
from loadtests.runner import run_level
from loadtests.telemetry import ProcessCpu, Telemetry, parse_prometheus
from loadtests.workload import BenchRequest


def test_override_replaces_flags_and_their_negations():
    args = ["--model", "m", "--enable-prefix-caching", "--api-server-count", "4",
            "--mm-processor-kwargs", '{"max_pixels":1}']
    out = override(args, ["--api-server-count", "8", "--no-enable-prefix-caching",
                          "--kv-cache-dtype", "fp8"])
    assert out == ["--model", "m", "--mm-processor-kwargs", '{"max_pixels":1}',
                   "--api-server-count", "8", "--no-enable-prefix-caching",
                   "--kv-cache-dtype", "fp8"]


def test_variant_spec_keeps_json_and_reads_engines():
    name, args, engines = parse_variant(
        """enc=@engines=2 --compilation-config '{"cudagraph_mm_encoder":true}'""")
    assert (name, args, engines) == ("enc", ["--compilation-config",
                                             '{"cudagraph_mm_encoder":true}'], 2)


def test_configs_at_tp2_add_the_data_parallel_encoder():
    runs, _ = configs("32b", "h200", "bf16", "/ckpt", 8000, None, ["x=--max-num-seqs 64"], tp=2)
    names = [r[0] for r in runs]
    assert names == ["vllm-defaults-tp2", "planner-bf16-tp2", "planner-bf16-tp2-x"]
    defaults, planned, variant = (r[1] for r in runs)
    assert defaults[-2:] == ["--tensor-parallel-size", "2"]
    for a in (planned, variant):
        assert a[a.index("--tensor-parallel-size") + 1] == "2"
        assert a[a.index("--mm-encoder-tp-mode") + 1] == "data"
    assert variant[variant.index("--max-num-seqs") + 1] == "64"


async def _replicas(n: int, delay_s: list[float]):
    """n tiny SSE endpoints; replica i answers after delay_s[i]. Returns (urls, hits, stop)."""
    hits = [0] * n
    runners = []
    urls = []
    for i in range(n):
        async def chat(request, i=i):
            await request.read()
            hits[i] += 1
            await asyncio.sleep(delay_s[i])
            resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
                             b'data: {"choices":[],"usage":{"prompt_tokens":3,'
                             b'"completion_tokens":1}}\n\ndata: [DONE]\n\n')
            return resp
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        urls.append(f"http://127.0.0.1:{port}/v1/chat/completions")
        runners.append(runner)

    async def stop():
        for r in runners:
            await r.cleanup()
    return urls, hits, stop


def test_replicas_share_the_load_by_fewest_in_flight():
    async def go():
        # replica 0 is 4x slower: least-outstanding sends it fewer requests than round-robin
        urls, hits, stop = await _replicas(2, [0.2, 0.05])
        try:
            reqs = [BenchRequest({"model": "m"}, 0) for _ in range(60)]
            records, _ = await run_level(urls, reqs, concurrency=8)
        finally:
            await stop()
        return records, hits
    records, hits = asyncio.run(go())
    assert all(r.success for r in records)
    assert sum(hits) == 60
    assert hits[1] > 2 * hits[0] > 0, hits


METRICS_BEFORE = """
vllm:request_queue_time_seconds_sum{model_name="m"} 1.0
vllm:request_queue_time_seconds_count{model_name="m"} 10
vllm:request_prefill_time_seconds_sum{model_name="m"} 2.0
vllm:request_prefill_time_seconds_count{model_name="m"} 10
vllm:time_to_first_token_seconds_sum{model_name="m"} 5.0
vllm:time_to_first_token_seconds_count{model_name="m"} 10
"""
METRICS_AFTER = """
vllm:request_queue_time_seconds_sum{model_name="m"} 3.0
vllm:request_queue_time_seconds_count{model_name="m"} 30
vllm:request_prefill_time_seconds_sum{model_name="m"} 8.0
vllm:request_prefill_time_seconds_count{model_name="m"} 30
vllm:time_to_first_token_seconds_sum{model_name="m"} 25.0
vllm:time_to_first_token_seconds_count{model_name="m"} 30
"""


def test_server_side_timings_are_means_over_the_level():
    t = Telemetry("http://127.0.0.1:1")
    t.samples = [parse_prometheus(METRICS_BEFORE), parse_prometheus(METRICS_AFTER)]
    s = t.summary()
    assert s["queue_mean_ms"] == pytest.approx(100.0)  # (3-1) s / (30-10)
    assert s["prefill_mean_ms"] == pytest.approx(300.0)
    assert s["server_ttft_mean_ms"] == pytest.approx(1000.0)
    assert "decode_mean_ms" not in s  # not in the scrape: not invented


def test_process_cpu_sees_a_busy_process_and_its_busiest_thread():
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\n"
                             "while time.time()-t<4: pass", "--fake-vllm-marker"])
    try:
        cpu = ProcessCpu(match=("--fake-vllm-marker",))
        time.sleep(0.3)
        cpu.start()
        time.sleep(1.5)
        rows = cpu.stop()["process_cpu"]
    finally:
        busy.kill()
    assert [r["pid"] for r in rows] == [busy.pid]
    assert rows[0]["cores"] > 0.5 and rows[0]["busiest_thread_pct"] > 50
