"""Side by side on one GPU, in one go: vLLM's plain defaults vs the planner's profile (and
optionally the planner's profile with a smaller pixel budget), same workload, same client.

Each configuration: start vLLM (random weights of the real shape, `--load-format dummy`), warm
up (Triton kernels JIT-compile on first use), sweep concurrency with `qvl bench`'s runner, write
one result JSON, stop. Run on the GPU machine:

    python -m loadtests.gpu_compare --shape 8b --card h200 --out $OUT --concurrency 16,32,64,128
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def configs(shape: str, card: str, quant: str, ckpt: str, port: int, pixels: int | None):
    from serving.planner import make_plan
    from serving.settings import ServeSettings, build_vllm_args

    base = ["--model", ckpt, "--load-format", "dummy", "--served-model-name", "m",
            "--host", "127.0.0.1", "--port", str(port)]
    plan = make_plan(shape, card, quant, tp=1)
    planned = build_vllm_args(plan.settings(model=ckpt, load_format="dummy",
                                            served_model_name="m", port=port))
    out = [("vllm-defaults", base, None), (f"planner-{quant}", planned, quant)]
    if pixels:
        budget = build_vllm_args(plan.settings(model=ckpt, load_format="dummy",
                                               served_model_name="m", port=port,
                                               max_pixels=pixels))
        out.append((f"planner-{quant}-pixels{pixels}", budget, quant))
    return out, ServeSettings(model=ckpt, port=port)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="8b")
    ap.add_argument("--card", default="h200")
    ap.add_argument("--quant", default="fp8")
    ap.add_argument("--concurrency", default="16,32,64,128")
    ap.add_argument("--prompts-factor", type=int, default=4)
    ap.add_argument("--pixel-budget", type=int, default=0, help="also run with this max_pixels")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    from launch.supervisor import VllmProcess
    from loadtests.bench import BenchConfig, run_bench, write_result
    from loadtests.metrics import format_point
    from serving.checkpoint import write_checkpoint

    ckpt = f"/tmp/qvl-{a.shape}-nowts"
    if not Path(ckpt, "config.json").exists():
        write_checkpoint(ckpt, a.shape, weights=False)
    concs = [int(c) for c in a.concurrency.split(",")]
    runs, settings = configs(a.shape, a.card, a.quant, ckpt, 8000, a.pixel_budget or None)
    out = Path(a.out)
    for name, args, quant in runs:
        log = open(out / f"{name}-server.log", "w")
        proc = VllmProcess(settings, log_prefix="", log_out=log, raw_args=args)
        t0 = time.monotonic()
        proc.start()
        try:
            ready = proc.wait_ready(600)
            print(f"{name}: ready in {ready:.0f} s", flush=True)
            base = dict(base_url="http://127.0.0.1:8000/v1", model="m", card=a.card,
                        quant=quant, label="measured", server_args=args, progress=False,
                        name=f"{a.card}-{a.shape}-{name}")
            # warm-up: JIT kernels and CUDA graphs for the batch sizes the sweep will use
            run_bench(BenchConfig(**base, concurrency=[max(concs)], prompts_per_level=
                                  2 * max(concs), warmup=8))
            print(f"{name}: warm after {time.monotonic() - t0:.0f} s", flush=True)
            for c in concs:
                r = run_bench(BenchConfig(**base, concurrency=[c], warmup=4,
                                          prompts_per_level=max(64, a.prompts_factor * c)),
                              command=f"python -m loadtests.gpu_compare {' '.join(argv or sys.argv[1:])}")
                print(f"{name} {format_point(r['points'][0])}", flush=True)
                if c == concs[0]:
                    merged = r
                else:
                    merged["points"] += r["points"]
            from loadtests.cost import cost_at_slo

            price = merged["meta"]["price"]["price_hour"] if merged["meta"]["price"] else None
            merged["cost"] = cost_at_slo(merged["points"], merged["slo_ms"], price)
            write_result(merged, out / f"{name}.json")
        finally:
            proc.terminate()
            time.sleep(5)
            proc.kill()
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
