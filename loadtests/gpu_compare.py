"""Side by side on one GPU, in one go: vLLM's plain defaults vs the planner's profile, and any
variants of the profile, same workload, same client.

Each configuration: start vLLM (random weights of the real shape, `--load-format dummy`) — or
several engines on the same GPU, each with its share of memory, the load spread over them —
warm up (Triton kernels JIT-compile on first use), sweep concurrency with `qvl bench`'s runner,
write one result JSON, stop. Run on the GPU machine:

    python -m loadtests.gpu_compare --shape 8b --card h200 --out $OUT --concurrency 16,32,64,128
    python -m loadtests.gpu_compare ... --only planner --variant 'kv8=--kv-cache-dtype fp8' \\
        --variant 'two=@engines=2'

A variant is NAME=ARGS: vLLM arguments that replace the profile's value of the same flag (or
are added), and `@engines=N` for N engines sharing the GPU.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path


def override(args: list[str], extra: list[str]) -> list[str]:
    """`args` with each `--flag [value]` of `extra` replacing the same flag (or appended)."""
    def split(a: list[str]) -> list[list[str]]:
        out: list[list[str]] = []
        for tok in a:
            if tok.startswith("--") or not out:
                out.append([tok])
            else:
                out[-1].append(tok)
        return out

    def key(flag: str) -> str:
        return flag.split("=", 1)[0].removeprefix("--").removeprefix("no-")

    new = split(extra)
    replaced = {key(g[0]) for g in new}
    kept = [g for g in split(args) if key(g[0]) not in replaced]
    return [t for g in kept + new for t in g]


def parse_variant(spec: str) -> tuple[str, list[str], int]:
    name, _, rest = spec.partition("=")
    toks, engines = [], 1
    for tok in shlex.split(rest):
        if tok.startswith("@engines="):
            engines = int(tok.split("=", 1)[1])
        else:
            toks.append(tok)
    return name, toks, engines


def configs(shape: str, card: str, quant: str, ckpt: str, port: int, pixels: int | None,
            variants: list[str] = (), tp: int = 1):
    """[(name, vLLM args, quant, engines)] and the base settings."""
    from serving.planner import make_plan
    from serving.settings import ServeSettings, build_vllm_args

    base = ["--model", ckpt, "--load-format", "dummy", "--served-model-name", "m",
            "--host", "127.0.0.1", "--port", str(port)]
    plan = make_plan(shape, card, quant, tp=tp)
    planned = build_vllm_args(plan.settings(model=ckpt, load_format="dummy",
                                            served_model_name="m", port=port))
    if tp > 1:
        base += ["--tensor-parallel-size", str(tp)]
    tag = f"{quant}-tp{tp}" if tp > 1 else quant
    out = [("vllm-defaults" + (f"-tp{tp}" if tp > 1 else ""), base, None, 1),
           (f"planner-{tag}", planned, quant, 1)]
    if pixels:
        budget = build_vllm_args(plan.settings(model=ckpt, load_format="dummy",
                                               served_model_name="m", port=port,
                                               max_pixels=pixels))
        out.append((f"planner-{tag}-pixels{pixels}", budget, quant, 1))
    for spec in variants:
        name, extra, engines = parse_variant(spec)
        out.append((f"planner-{tag}-{name}", override(planned, extra), quant, engines))
    return out, ServeSettings(model=ckpt, port=port)


def start_engines(settings, args: list[str], engines: int, port: int, out: Path, name: str,
                  procs: list) -> None:
    """Start `engines` servers on ports port, port+1, ... one after the other (each measures
    free memory at start-up, so they must not overlap); each gets 1/engines of the memory.
    Started processes are appended to `procs` as they start (the caller stops them)."""
    from launch.supervisor import VllmProcess

    for i in range(engines):
        a = args
        if engines > 1:
            share = float(_value(args, "--gpu-memory-utilization") or 0.9) / engines
            a = override(args, ["--port", str(port + i),
                                "--gpu-memory-utilization", f"{share:.3f}"])
        log = open(out / f"{name}-server{i if engines > 1 else ''}.log", "w")
        proc = VllmProcess(settings.model_copy(update={"port": port + i}), log_prefix="",
                           log_out=log, raw_args=a)
        proc.log_file = log
        proc.start()
        procs.append(proc)
        proc.wait_ready(600)


def _value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="8b")
    ap.add_argument("--card", default="h200")
    ap.add_argument("--quant", default="fp8")
    ap.add_argument("--tp", type=int, default=1, help="tensor parallel size (GPUs per engine)")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--concurrency", default="16,32,64,128")
    ap.add_argument("--defaults-concurrency", default="",
                    help="levels for vllm-defaults (default: --concurrency)")
    ap.add_argument("--prompts-factor", type=int, default=4)
    ap.add_argument("--pixel-budget", type=int, default=0, help="also run with this max_pixels")
    ap.add_argument("--variant", action="append", default=[], help="NAME='vLLM args' (above)")
    ap.add_argument("--only", default="", help="comma-separated name prefixes to run")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    from loadtests.bench import BenchConfig, run_bench, write_result
    from loadtests.cost import cost_at_slo
    from loadtests.metrics import format_point
    from serving.checkpoint import write_checkpoint

    ckpt = f"/tmp/qvl-{a.shape}-nowts"
    if not Path(ckpt, "config.json").exists():
        write_checkpoint(ckpt, a.shape, weights=False)
    concs = [int(c) for c in a.concurrency.split(",")]
    port = a.port
    runs, settings = configs(a.shape, a.card, a.quant, ckpt, port, a.pixel_budget or None,
                             a.variant, a.tp)
    if a.only:
        keep = tuple(p.strip() for p in a.only.split(","))
        tag = f"planner-{a.quant}-tp{a.tp}-" if a.tp > 1 else f"planner-{a.quant}-"
        runs = [r for r in runs if r[0].startswith(keep) or r[0].removeprefix(tag)
                .startswith(keep)]
    out = Path(a.out)
    command = f"python -m loadtests.gpu_compare {shlex.join(argv or sys.argv[1:])}"
    for name, args, quant, engines in runs:
        levels = [int(c) for c in a.defaults_concurrency.split(",")] \
            if name == "vllm-defaults" and a.defaults_concurrency else concs
        t0 = time.monotonic()
        procs = []
        try:
            start_engines(settings, args, engines, port, out, name, procs)
            print(f"{name}: {engines} engine(s) ready in {time.monotonic() - t0:.0f} s",
                  flush=True)
            urls = [f"http://127.0.0.1:{port + i}/v1" for i in range(engines)]
            base = dict(base_url=urls[0], replica_urls=urls[1:], model="m", card=a.card,
                        quant=quant, label="measured", server_args=args, progress=False,
                        name=f"{a.card}-{a.shape}-{name}", gpus=a.tp)
            # warm-up: JIT kernels and CUDA graphs for the batch sizes the sweep will use
            run_bench(BenchConfig(**base, concurrency=[max(levels)], prompts_per_level=
                                  2 * max(levels), warmup=8))
            print(f"{name}: warm after {time.monotonic() - t0:.0f} s", flush=True)
            merged = None
            for c in levels:
                r = run_bench(BenchConfig(**base, concurrency=[c], warmup=4,
                                          prompts_per_level=max(64, a.prompts_factor * c)),
                              command=command)
                p = r["points"][0]
                t = p["telemetry"]
                print(f"{name} {format_point(p)} | server queue/prefill/ttft "
                      f"{t.get('queue_mean_ms', 0):.0f}/{t.get('prefill_mean_ms', 0):.0f}/"
                      f"{t.get('server_ttft_mean_ms', 0):.0f} ms | cpu " + ", ".join(
                          f"{x['process'][:22]} {x['cores']}c/{x['busiest_thread_pct']:.0f}%"
                          for x in t.get("process_cpu", [])[:6]), flush=True)
                if merged is None:
                    merged = r
                    merged["meta"]["engines_per_gpu"] = engines
                else:
                    merged["points"] += r["points"]
                # written after every level: a run cut short by a time limit keeps its levels
                price = merged["meta"]["price"]["price_hour"] if merged["meta"]["price"] \
                    else None
                merged["cost"] = cost_at_slo(merged["points"], merged["slo_ms"], price, a.tp)
                write_result(merged, out / f"{name}.json")
        except Exception as e:  # noqa: BLE001 - one configuration failing must not stop the rest
            print(f"{name}: FAILED: {type(e).__name__}: {e}", flush=True)
        finally:
            for proc in procs:
                proc.terminate()
            time.sleep(5)
            for proc in procs:
                proc.kill()
                proc.log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
