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


def test_interleaved_rounds_share_the_gpu_and_alternate(monkeypatch, tmp_path, capsys):
    """--interleave: every configuration up at once on its own port with an equal memory share,
    then rounds that sweep each configuration in turn, one JSON per configuration and round.
    (Starting vLLM and the sweeps themselves are the plain mode's, run on the GPU machine.)"""
    import argparse

    from loadtests import gpu_compare as gc

    started, swept = [], []
    monkeypatch.setattr(gc, "start_engines", lambda settings, args, engines, port, out, name,
                        procs: started.append((name, port, args)))
    monkeypatch.setattr(gc, "_warm", lambda base, levels: None)

    def fake_sweep(base, name, levels, engines, a, command, path):
        swept.append((name, tuple(levels), base["base_url"], path.name))
        assert base["name"] == f"h200-8b-{name}-{path.stem.rsplit('-', 1)[1]}"  # the round
        return {"cost": {"images_per_gpu_hour": 90_000 if "planner" in name else 60_000}}

    monkeypatch.setattr(gc, "sweep", fake_sweep)
    runs, settings = configs("8b", "h200", "fp8", "/ckpt", 8000, None)
    a = argparse.Namespace(interleave=2, port=8000, card="h200", shape="8b", tp=1,
                           concurrency="64,96", defaults_concurrency="48,64", memory_shares="")
    assert gc.interleaved(runs, settings, a, tmp_path, "cmd") == 0
    assert [(n, p) for n, p, _ in started] == [("vllm-defaults", 8000), ("planner-fp8", 8010)]
    for _, port, args in started:
        assert args[args.index("--port") + 1] == str(port)
        assert args[args.index("--gpu-memory-utilization") + 1] == "0.450"
        assert args.count("--gpu-memory-utilization") == 1
    assert swept == [
        ("vllm-defaults", (48, 64), "http://127.0.0.1:8000/v1", "vllm-defaults-round1.json"),
        ("planner-fp8", (64, 96), "http://127.0.0.1:8010/v1", "planner-fp8-round1.json"),
        ("vllm-defaults", (48, 64), "http://127.0.0.1:8000/v1", "vllm-defaults-round2.json"),
        ("planner-fp8", (64, 96), "http://127.0.0.1:8010/v1", "planner-fp8-round2.json")]
    out = capsys.readouterr().out
    assert out.count("planner-fp8 90,000 (1.50x)") == 2


def test_interleaved_memory_shares_are_checked(tmp_path):
    import argparse

    from loadtests import gpu_compare as gc

    runs, settings = configs("8b", "h200", "fp8", "/ckpt", 8000, None)
    for shares in ("0.5", "0.6,0.5"):
        a = argparse.Namespace(interleave=1, port=8000, memory_shares=shares)
        with pytest.raises(SystemExit, match="one fraction per configuration .*at most 0.95"):
            gc.interleaved(runs, settings, a, tmp_path, "cmd")


def test_interleaved_memory_shares_go_to_each_configuration(monkeypatch, tmp_path):
    import argparse

    from loadtests import gpu_compare as gc

    started = []
    monkeypatch.setattr(gc, "start_engines", lambda settings, args, engines, port, out, name,
                        procs: started.append(args[args.index("--gpu-memory-utilization") + 1]))
    monkeypatch.setattr(gc, "_warm", lambda base, levels: None)
    monkeypatch.setattr(gc, "sweep", lambda *a, **k: {})
    runs, settings = configs("8b", "h200", "fp8", "/ckpt", 8000, None)
    a = argparse.Namespace(interleave=1, port=8000, card="h200", shape="8b", tp=1,
                           concurrency="64", defaults_concurrency="", memory_shares="0.5,0.4")
    gc.interleaved(runs, settings, a, tmp_path, "cmd")
    assert started == ["0.500", "0.400"]


def test_env_tokens_replace_by_key_and_reach_the_server_settings(monkeypatch, tmp_path):
    import loadtests.gpu_compare as gc
    from serving.settings import ServeSettings, build_vllm_env

    args = override(["--model", "m", "--x", "1"], ["@env=A=1", "--x", "2"])
    args = override(args, ["@env=A=2", "@env=B=3"])
    assert args == ["--model", "m", "--x", "2", "@env=A=2", "@env=B=3"]
    assert gc.split_env(args) == (["--model", "m", "--x", "2"], {"A": "2", "B": "3"})

    started = []

    class Proc:
        def __init__(self, settings, log_prefix, log_out, raw_args):
            started.append((build_vllm_env(settings), raw_args))

        def start(self):
            pass

        def wait_ready(self, timeout):
            pass

    monkeypatch.setattr("launch.supervisor.VllmProcess", Proc)
    gc.start_engines(ServeSettings(model="/m"), args, 1, 8000, tmp_path, "x", [])
    env, raw = started[0]
    assert env["A"] == "2" and env["B"] == "3" and not any(t.startswith("@") for t in raw)


def test_the_planner_side_carries_its_model_runner_environment():
    runs, _ = configs("8b", "h200", "fp8", "/ckpt", 8000, None)
    planned = dict((r[0], r[1]) for r in runs)["planner-fp8"]
    assert "@env=VLLM_USE_V2_MODEL_RUNNER=0" in planned  # encoder CUDA graphs need V1
    assert planned[planned.index("--quantization") + 1] == "fp8_per_tensor"  # BF16 scratch weights
    defaults = dict((r[0], r[1]) for r in runs)["vllm-defaults"]
    assert not any(t.startswith("@env=") for t in defaults)
