"""Where one request's engine time goes: the reference workload taken apart on one server.

Probes at a fixed concurrency high enough to saturate the engine; 1 / throughput is then the
engine time per request of that probe:

    full          the reference workload (1 image, ~50 text tokens, 128 output tokens)
    prefill+vit   the same with 1 output token (image encoder + prefill, no decode)
    prefill       text only, as many prompt tokens as `full` (no image encoder)
    decode        text only, ~50 prompt tokens, 128 output tokens

so vision encoder ~= prefill+vit - prefill and decode ~= full - prefill+vit (per request, ms).
With `--profile`, vLLM's torch profiler records a few seconds of `full`; the summary written
(`*-profile.txt`) has the step mix and GPU time per step kind and the top kernels.

    python -m loadtests.gpu_breakdown --shape 8b --card h200 --quant fp8 --out $OUT --profile
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shlex
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx

from loadtests import encoder_probe
from loadtests.gpu_compare import configs, override, start_engines, stop_all
from loadtests.memory_check import CKPT_ROOT, checkpoint_for


def probes(c: int) -> list[tuple[str, dict, int]]:
    """(name, workload fields, concurrency)."""
    return [("full", {}, c), ("prefill+vit", {"output_tokens": 1}, c),
            ("prefill", {"images_per_request": 0, "output_tokens": 1}, c),
            ("decode", {"images_per_request": 0}, c)]


def summarize_trace(path: Path, top: int = 25) -> str:
    """Step mix and GPU time from a torch profiler trace of vLLM's worker."""
    events = json.loads(gzip.open(path).read() if path.suffix == ".gz" else path.read_text())
    events = events.get("traceEvents", events)
    kernels = [e for e in events if e.get("cat") == "kernel" and "dur" in e]
    if not kernels:
        return f"{path.name}: no kernels recorded\n"
    t0 = min(e["ts"] for e in kernels)
    t1 = max(e["ts"] + e["dur"] for e in kernels)
    busy, end = 0.0, t0
    for e in sorted(kernels, key=lambda e: e["ts"]):  # union of kernel intervals
        s, f = max(e["ts"], end), e["ts"] + e["dur"]
        if f > s:
            busy += f - s
            end = f
    by_name: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for e in kernels:
        by_name[e["name"][:90]][0] += 1
        by_name[e["name"][:90]][1] += e["dur"]
    steps: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "gpu_user_annotation" and e["name"].startswith("execute_context"):
            ctx = int(e["name"].split("_")[2].split("(")[0])
            kind = "decode only" if ctx == 0 else ("1 prefill" if ctx == 1 else "2+ prefills")
            steps[kind].append(e["dur"])
    lines = [f"{path.name}: window {(t1 - t0) / 1e3:.0f} ms, GPU busy {busy / (t1 - t0):.1%}, "
             f"kernel time {sum(v[1] for v in by_name.values()) / 1e3:.0f} ms"]
    for kind, durs in sorted(steps.items()):
        lines.append(f"  steps {kind:12s} n={len(durs):4d} mean {sum(durs) / len(durs) / 1e3:7.1f}"
                     f" ms  total {sum(durs) / 1e3:7.0f} ms")
    total = sum(v[1] for v in by_name.values())
    lines.append("  top kernels (share of kernel time, calls, ms):")
    for name, (n, d) in sorted(by_name.items(), key=lambda kv: -kv[1][1])[:top]:
        lines.append(f"  {d / total:6.1%} {n:6d} {d / 1e3:8.1f}  {name}")
    return "\n".join(lines) + "\n"


def _profile(root: str, delay: float, seconds: float, log: list) -> None:
    try:
        time.sleep(delay)
        with httpx.Client(timeout=300) as c:
            c.post(f"{root}/start_profile").raise_for_status()
            time.sleep(seconds)
            c.post(f"{root}/stop_profile").raise_for_status()
    except httpx.HTTPError as e:
        log.append(f"profiler: {e}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="8b")
    ap.add_argument("--card", default="h200")
    ap.add_argument("--quant", default="fp8")
    ap.add_argument("--config", default="planner", help="planner or vllm-defaults")
    ap.add_argument("--args", default="", help="vLLM arguments replacing the profile's")
    ap.add_argument("--concurrency", type=int, default=128)
    ap.add_argument("--prompts-factor", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="torch profile of `full`")
    ap.add_argument("--encoder-probe", action="store_true",
                    help="time the vision encoder inside the server (loadtests.encoder_probe)")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    from loadtests.bench import BenchConfig, run_bench
    from loadtests.workload import Workload
    ckpt = str(checkpoint_for(a.shape, "bf16", CKPT_ROOT))
    runs, settings = configs(a.shape, a.card, a.quant, ckpt, a.port, None)
    name, args, quant, _ = next(r for r in runs if r[0].startswith(a.config))
    args = override(args, shlex.split(a.args))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    prof_dir = Path("/tmp/qvl-profile")
    if a.profile:
        args = override(args, ["--profiler-config", json.dumps(
            {"profiler": "torch", "torch_profiler_dir": str(prof_dir),
             "torch_profiler_with_stack": False, "ignore_frontend": True})])
    probe_dir = out / "encoder-probe"
    if a.encoder_probe:
        ep = encoder_probe.install("/tmp/qvl-encoder-probe-ep")
        os.environ["PYTHONPATH"] = f"{ep}:{os.environ.get('PYTHONPATH', '')}"
        os.environ[encoder_probe.ENV] = str(probe_dir)
    tag = f"{name}{'-' + a.args.replace(' ', '').replace('--', '_') if a.args else ''}"
    procs: list = []
    result = {"config": name, "server_args": args, "concurrency": a.concurrency, "probes": {}}
    try:
        t0 = time.monotonic()
        start_engines(settings, args, 1, a.port, out, tag, procs)
        print(f"{tag}: ready in {time.monotonic() - t0:.0f} s", flush=True)
        base = dict(base_url=f"http://127.0.0.1:{a.port}/v1", model="m", card=a.card,
                    quant=quant, progress=False, server_args=args)
        run_bench(BenchConfig(**base, concurrency=[a.concurrency], warmup=8,
                              prompts_per_level=a.concurrency))
        prompt_tokens = 0
        for probe, fields, c in probes(a.concurrency):
            if probe == "prefill":  # same prompt length as `full`, text only
                fields = dict(fields, text_tokens=max(1, prompt_tokens - 12))
            timed = a.encoder_probe and probe in ("full", "prefill+vit")  # probes with images
            before = encoder_probe.read(probe_dir) if timed else None
            r = run_bench(BenchConfig(**base, workload=Workload(**fields), concurrency=[c],
                                      warmup=4, prompts_per_level=a.prompts_factor * c))
            p = r["points"][0]
            if timed:
                time.sleep(1.5)  # the probe writes at most once a second
                enc = encoder_probe.per_image(before, encoder_probe.read(probe_dir))
                result.setdefault("encoder_probe", {})[probe] = enc
                print(f"{tag} {probe:12s} encoder per image (ms): {enc}", flush=True)
            if probe == "full":
                prompt_tokens = round(p["total_input_tokens"] / p["completed"])
            result["probes"][probe] = {
                "request_throughput": p["request_throughput"],
                "ms_per_request": 1000 / p["request_throughput"],
                "input_tokens_per_request": p["total_input_tokens"] / p["completed"],
                "gpu_util_pct_mean": p["telemetry"].get("gpu_util_pct_mean"),
                "process_cpu": p["telemetry"].get("process_cpu", [])[:3]}
            print(f"{tag} {probe:12s} {p['request_throughput']:6.2f} req/s = "
                  f"{1000 / p['request_throughput']:6.1f} ms/req, "
                  f"{p['total_input_tokens'] / p['completed']:.0f} prompt tokens, GPU "
                  f"{p['telemetry'].get('gpu_util_pct_mean') or 0:.0f}%", flush=True)
        ms = {k: v["ms_per_request"] for k, v in result["probes"].items()}
        result["split_ms"] = {"vision encoder": ms["prefill+vit"] - ms["prefill"],
                              "prefill (text)": ms["prefill"],
                              "decode (128 tokens)": ms["full"] - ms["prefill+vit"]}
        print(f"{tag} split per request (ms): " + ", ".join(
            f"{k} {v:.1f}" for k, v in result["split_ms"].items()), flush=True)
        if a.profile:
            log: list = []
            n = a.prompts_factor * a.concurrency  # images are drawn before the clock starts
            th = threading.Thread(target=_profile, args=(
                base["base_url"].rsplit("/v1", 1)[0], 8.0 + 0.04 * n, 2.0, log))
            th.start()
            run_bench(BenchConfig(**base, concurrency=[a.concurrency], warmup=0,
                                  prompts_per_level=n))
            th.join()
            text = "".join(log)
            for f in sorted(prof_dir.glob("*.pt.trace.json*")):
                text += summarize_trace(f)
            table = next(iter(prof_dir.glob("profiler_out_*.txt")), None)
            if table:
                text += "\n" + "\n".join(table.read_text().splitlines()[:60])
            (out / f"{tag}-profile.txt").write_text(text)
            print(text[:4000], flush=True)
    except Exception as e:  # noqa: BLE001 - keep what was measured
        print(f"{tag}: FAILED: {type(e).__name__}: {e}", flush=True)
    finally:
        (out / f"{tag}-breakdown.json").write_text(json.dumps(result, indent=1))
        stop_all(procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
