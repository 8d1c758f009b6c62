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
are added), `@engines=N` for N engines sharing the GPU, and `@env=KEY=VALUE` for an environment
variable of the server (e.g. `@env=VLLM_USE_V2_MODEL_RUNNER=0`; kept in the recorded args).

Between device calls the same configuration moves by ~10 % (a shared machine; levels of 3 x c
requests). `--interleave ROUNDS` starts every configuration at once, each with a share of the
GPU's memory (`--memory-shares`, default equal), and sweeps them in turn ROUNDS times: one
result JSON per configuration and round, a ratio per round — drift hits both sides alike.
Its first GPU run (H200, 2026-11-21) measured the defaults 8-20 % below their standalone
numbers while the planner's idle server was resident (cause not established): read its ratios
beside a plain run's, not instead of one.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path


def override(args: list[str], extra: list[str]) -> list[str]:
    """`args` with each `--flag [value]` of `extra` replacing the same flag (or appended);
    an `@env=KEY=VALUE` token replaces the same KEY's."""
    def split(a: list[str]) -> list[list[str]]:
        out: list[list[str]] = []
        for tok in a:
            if tok.startswith(("--", "@")) or not out:
                out.append([tok])
            else:
                out[-1].append(tok)
        return out

    def key(flag: str) -> str:
        if flag.startswith("@env="):
            return flag.split("=", 2)[1]
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


def split_env(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """vLLM's arguments and the server environment of `@env=KEY=VALUE` tokens."""
    env = dict(t.removeprefix("@env=").split("=", 1) for t in args if t.startswith("@env="))
    return [t for t in args if not t.startswith("@env=")], env


def _with_env(settings) -> list[str]:
    """vLLM's arguments of `settings` plus `@env=` tokens for what vLLM reads only from the
    environment (the model runner): the servers start from bare settings, so the plan's
    environment must travel with its arguments (and so is recorded with them)."""
    from serving.settings import build_vllm_args, runner_env

    return build_vllm_args(settings) + [f"@env={k}={v}" for k, v in runner_env(settings).items()]


def configs(shape: str, card: str, quant: str, ckpt: str, port: int, pixels: int | None,
            variants: list[str] = (), tp: int = 1):
    """[(name, vLLM args, quant, engines)] and the base settings."""
    from serving.planner import make_plan
    from serving.settings import ServeSettings

    base = ["--model", ckpt, "--load-format", "dummy", "--served-model-name", "m",
            "--host", "127.0.0.1", "--port", str(port)]
    plan = make_plan(shape, card, quant, tp=tp)
    # the scratch checkpoint holds BF16 weights: an FP8 plan quantizes them at load time
    planned = _with_env(plan.settings(model=ckpt, load_format="dummy", bf16_weights=True,
                                      served_model_name="m", port=port))
    if tp > 1:
        base += ["--tensor-parallel-size", str(tp)]
    tag = f"{quant}-tp{tp}" if tp > 1 else quant
    out = [("vllm-defaults" + (f"-tp{tp}" if tp > 1 else ""), base, None, 1),
           (f"planner-{tag}", planned, quant, 1)]
    if pixels:
        budget = _with_env(plan.settings(model=ckpt, load_format="dummy", bf16_weights=True,
                                         served_model_name="m", port=port, max_pixels=pixels))
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

    args, env = split_env(args)
    if env:
        settings = settings.model_copy(update={"env": {**settings.env, **env}})
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


def _levels(a, name: str) -> list[int]:
    if name.startswith("vllm-defaults") and a.defaults_concurrency:
        return [int(c) for c in a.defaults_concurrency.split(",")]
    return [int(c) for c in a.concurrency.split(",")]


def _base(a, name: str, args: list[str], quant: str | None, ports: list[int]) -> dict:
    urls = [f"http://127.0.0.1:{p}/v1" for p in ports]
    return dict(base_url=urls[0], replica_urls=urls[1:], model="m", card=a.card, quant=quant,
                label="measured", server_args=args, progress=False,
                name=f"{a.card}-{a.shape}-{name}", gpus=a.tp)


def _warm(base: dict, levels: list[int]) -> None:
    """JIT kernels and CUDA graphs for the batch sizes the sweep will use."""
    from loadtests.bench import BenchConfig, run_bench

    run_bench(BenchConfig(**base, concurrency=[max(levels)], prompts_per_level=2 * max(levels),
                          warmup=8))


def sweep(base: dict, name: str, levels: list[int], engines: int, a, command: str,
          path: Path) -> dict:
    """Run the levels one by one; the JSON is written after every level, so a run cut short by
    a time limit keeps what it measured."""
    from loadtests.bench import BenchConfig, run_bench, write_result
    from loadtests.cost import cost_at_slo
    from loadtests.metrics import format_point

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
        price = merged["meta"]["price"]["price_hour"] if merged["meta"]["price"] else None
        merged["cost"] = cost_at_slo(merged["points"], merged["slo_ms"], price, a.tp)
        write_result(merged, path)
    return merged or {}


def interleaved(runs, settings, a, out: Path, command: str) -> int:
    """All configurations up at once on the one GPU, each with its share of the memory (KV-cache
    room is not what binds at these loads; the share is the one flag changed), then
    `a.interleave` rounds, each sweeping every configuration in turn: drift of the shared
    machine hits all of them alike, and each round gives its own ratio."""
    if any(engines > 1 for *_, engines in runs):
        raise SystemExit("--interleave takes one engine per configuration")
    shares = [float(x) for x in a.memory_shares.split(",")] if getattr(a, "memory_shares", "") \
        else [0.9 / len(runs)] * len(runs)
    if len(shares) != len(runs) or sum(shares) > 0.95:
        raise SystemExit(f"--memory-shares: one fraction per configuration ({len(runs)}: "
                         f"{', '.join(r[0] for r in runs)}), at most 0.95 in all")
    procs: list = []
    up = []
    try:
        for i, ((name, args, quant, _), share) in enumerate(zip(runs, shares)):
            port = a.port + 10 * i
            args = override(args, ["--port", str(port), "--gpu-memory-utilization",
                                   f"{share:.3f}"])
            t0 = time.monotonic()
            start_engines(settings, args, 1, port, out, name, procs)
            base = _base(a, name, args, quant, [port])
            _warm(base, _levels(a, name))
            print(f"{name}: ready and warm in {time.monotonic() - t0:.0f} s "
                  f"(memory share {share:.3f})", flush=True)
            up.append((name, base))
        for r in range(1, a.interleave + 1):
            at_slo = {}
            for name, base in up:
                res = sweep({**base, "name": f"{base['name']}-round{r}"}, name,
                            _levels(a, name), 1, a, command, out / f"{name}-round{r}.json")
                at_slo[name] = res.get("cost", {}).get("images_per_gpu_hour")
            ref = next((v for k, v in at_slo.items() if k.startswith("vllm-defaults")), None)
            print(f"round {r} images/GPU-hour at SLO: " + ", ".join(
                f"{k} {v or 0:,.0f}" + (f" ({v / ref:.2f}x)" if v and ref else "")
                for k, v in at_slo.items()), flush=True)
    finally:
        stop_all(procs)
    return 0


def stop_all(procs: list) -> None:
    for proc in procs:
        proc.terminate()
    time.sleep(5)
    for proc in procs:
        proc.kill()
        proc.log_file.close()


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
    ap.add_argument("--interleave", type=int, default=0, metavar="ROUNDS",
                    help="start all configurations at once (memory split evenly) and sweep "
                         "them in turn, ROUNDS times")
    ap.add_argument("--memory-shares", default="",
                    help="with --interleave: GPU memory fraction per configuration, in order "
                         "(default: 0.9 split evenly). The defaults' max_model_len of 262,144 "
                         "needs a KV cache that large: give them ~0.5 on a 141 GB card")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    from loadtests.memory_check import CKPT_ROOT, checkpoint_for

    ckpt = str(checkpoint_for(a.shape, "bf16", CKPT_ROOT))  # random weights: --load-format dummy
    port = a.port
    runs, settings = configs(a.shape, a.card, a.quant, ckpt, port, a.pixel_budget or None,
                             a.variant, a.tp)
    if a.only:
        keep = tuple(p.strip() for p in a.only.split(","))
        tag = f"planner-{a.quant}-tp{a.tp}-" if a.tp > 1 else f"planner-{a.quant}-"
        runs = [r for r in runs if r[0].startswith(keep) or r[0].removeprefix(tag)
                .startswith(keep)]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    command = f"python -m loadtests.gpu_compare {shlex.join(argv or sys.argv[1:])}"
    if a.interleave:
        return interleaved(runs, settings, a, out, command)
    for name, args, quant, engines in runs:
        levels = _levels(a, name)
        t0 = time.monotonic()
        procs = []
        try:
            start_engines(settings, args, engines, port, out, name, procs)
            print(f"{name}: {engines} engine(s) ready in {time.monotonic() - t0:.0f} s",
                  flush=True)
            base = _base(a, name, args, quant, [port + i for i in range(engines)])
            _warm(base, levels)
            print(f"{name}: warm after {time.monotonic() - t0:.0f} s", flush=True)
            sweep(base, name, levels, engines, a, command, out / f"{name}.json")
        except Exception as e:  # noqa: BLE001 - one configuration failing must not stop the rest
            print(f"{name}: FAILED: {type(e).__name__}: {e}", flush=True)
        finally:
            stop_all(procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
