"""Benchmark: `qvl bench`'s runner and `vllm bench serve` side by side on the same server and
the same requests (vLLM's own random-mm samples, same seed, sent by both), rounds interleaved
A B B A ..., to show both report the same throughput and median TTFT/TPOT (target: within 5 %).

    python -m loadtests.compare_vllm_bench --url http://127.0.0.1:8000 --tokenizer MODEL_DIR \
        --out loadtests/results/cpu-tiny-2026-11-21/compare-vllm-bench.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

KEYS = ("request_throughput", "output_throughput", "median_ttft_ms", "median_tpot_ms")


def vllm_args(a, model: str, seed: int, result_dir: str):
    from vllm.benchmarks.serve import add_cli_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    p = FlexibleArgumentParser()
    add_cli_args(p)
    return p.parse_args([
            "--backend", "openai-chat", "--endpoint", "/v1/chat/completions",
            "--base-url", a.url, "--model", model, "--tokenizer", a.tokenizer,
            "--dataset-name", "random-mm", "--random-mm-base-items-per-request", "1",
            "--random-mm-limit-mm-per-prompt", '{"image": 1, "video": 0}',
            "--random-mm-bucket-config", f"{{({a.height}, {a.width}, 1): 1.0}}",
            "--random-input-len", str(a.text_tokens), "--random-output-len", str(a.output_tokens),
            "--num-prompts", str(a.prompts), "--max-concurrency", str(a.concurrency),
            "--ignore-eos", "--seed", str(seed), "--save-result", "--result-dir", result_dir,
            "--result-filename", "r.json", "--disable-tqdm"])


def run_vllm(a, model: str, seed: int) -> dict:
    from vllm.benchmarks.serve import main

    with tempfile.TemporaryDirectory() as d:
        with contextlib.redirect_stdout(io.StringIO()):
            main(vllm_args(a, model, seed, d))
        return json.loads(Path(d, "r.json").read_text())


def vllm_samples_as_requests(a, model: str, seed: int):
    """vLLM's own random-mm requests for this seed, as the bodies its openai-chat client sends."""
    from vllm.benchmarks.datasets import get_samples
    from vllm.tokenizers import get_tokenizer

    from loadtests.workload import BenchRequest

    args = vllm_args(a, model, seed, tempfile.gettempdir())
    samples = get_samples(args, get_tokenizer(a.tokenizer))
    out = []
    for s in samples:
        mm = s.multi_modal_data or []
        mm = mm if isinstance(mm, list) else [mm]
        body = {"model": model, "messages": [{"role": "user", "content": [
                    {"type": "text", "text": s.prompt}, *mm]}],
                "max_completion_tokens": s.expected_output_len, "ignore_eos": True,
                "stream": True, "stream_options": {"include_usage": True}}
        out.append(BenchRequest(body, len(mm)))
    return out


def run_qvl(a, model: str, seed: int) -> dict:
    from loadtests.metrics import summarize
    from loadtests.runner import run_level

    reqs = vllm_samples_as_requests(a, model, seed)
    records, dur = asyncio.run(run_level(a.url + "/v1/chat/completions", reqs,
                                         concurrency=a.concurrency))
    return summarize(records, dur)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="server root, e.g. http://127.0.0.1:8000")
    ap.add_argument("--tokenizer", required=True, help="model directory (for vllm bench)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--width", type=int, default=448)
    ap.add_argument("--height", type=int, default=336)
    ap.add_argument("--text-tokens", type=int, default=20)
    ap.add_argument("--output-tokens", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=96)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--warmup-rounds", type=int, default=0, help="discarded rounds first")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    import httpx

    model = a.model or httpx.get(a.url + "/v1/models").json()["data"][0]["id"]
    rounds = []
    for i in range(a.warmup_rounds):
        run_vllm(a, model, seed=500 + 2 * i)
        run_qvl(a, model, seed=501 + 2 * i)
    # Each run gets its own seed: the same images twice would hit vLLM's multimodal cache and
    # flatter whichever tool ran second (seen on the H200: +30 % throughput for the second run).
    for i in range(a.rounds):
        first, second = (run_vllm, run_qvl) if i % 2 == 0 else (run_qvl, run_vllm)
        r1 = first(a, model, seed=1000 + 2 * i)
        r2 = second(a, model, seed=1001 + 2 * i)
        v, q = (r1, r2) if first is run_vllm else (r2, r1)
        rounds.append({"vllm": {k: v[k] for k in KEYS + ("completed", "failed")},
                       "qvl": {k: q[k] for k in KEYS + ("completed", "failed")}})
        print(json.dumps(rounds[-1]), flush=True)
    med = {tool: {k: statistics.median(r[tool][k] for r in rounds) for k in KEYS}
           for tool in ("vllm", "qvl")}
    diff = {k: 100 * (med["qvl"][k] - med["vllm"][k]) / med["vllm"][k] for k in KEYS}
    result = {"benchmark": "qvl bench vs vllm bench serve", "command": "python -m "
              "loadtests.compare_vllm_bench " + " ".join(sys.argv[1:]),
              "machine": f"{platform.node()} {platform.machine()} python "
                         f"{platform.python_version()}",
              "workload": f"vLLM random-mm: 1 image {a.width}x{a.height}, {a.text_tokens} text, "
                          f"{a.output_tokens} output tokens, {a.prompts} prompts at "
                          f"concurrency {a.concurrency}",
              "rounds": rounds, "median": med, "diff_pct": diff,
              "within_5pct": all(abs(d) <= 5 for d in diff.values()),
              "date": time.strftime("%Y-%m-%d")}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({"median": med, "diff_pct": diff}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
