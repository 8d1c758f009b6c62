"""`qvl plan`: which model, quantization, context and concurrency fit a card, with vLLM flags."""

from __future__ import annotations

import argparse
import json
import shlex
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="compute what fits a GPU and the vLLM arguments for it",
        description="Plan a Qwen3-VL model on a GPU card from first principles. Without --gpu, "
                    "print the whole matrix (every size x quantization x card).")
    p.add_argument("--gpu", help="card: t4, a10g, rtx3090, l4, a100-40g, a100-80g, h100, h200")
    p.add_argument("--model", default="8b", help="size key (8b) or hub id")
    p.add_argument("--quant", default="bf16", help="bf16, fp8, awq, gptq, w4a16")
    p.add_argument("--tp", default="1", help="tensor parallel size, or 'auto' for the smallest "
                                             "that fits")
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.90)
    p.add_argument("--max-pixels", type=int, help="pixel budget per image (default 1048576)")
    p.add_argument("--images", type=int, default=1, help="images per request (workload)")
    p.add_argument("--image-size", default="1024x768", help="WxH of the workload's images")
    p.add_argument("--text-tokens", type=int, default=50)
    p.add_argument("--output-tokens", type=int, default=128)
    p.add_argument("--gpus-per-node", type=int, default=1,
                   help="GPUs in each node: with --nodes, plan TP x PP and replicas")
    p.add_argument("--nodes", type=int, default=1, help="nodes (PP goes across them, via Ray)")
    p.add_argument("--profile", help="plan a named profile instead")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from serving.planner import DEFAULT_MAX_PIXELS, Workload, make_plan, matrix
    from qvl_client.vision import parse_size
    from serving.profiles import load_profile, min_vram_gib

    try:
        w, h = parse_size(args.image_size)
        workload = Workload(images=args.images, image_width=w, image_height=h,
                            text_tokens=args.text_tokens, output_tokens=args.output_tokens)
        pixels = args.max_pixels or DEFAULT_MAX_PIXELS
        if args.profile:
            prof = load_profile(args.profile)
            if prof.is_cpu:
                print(f"profile {prof.name} runs on CPU; nothing to plan", file=sys.stderr)
                return 0
            plan = prof.plan()
        elif args.gpu and (args.gpus_per_node > 1 or args.nodes > 1):
            return _run_cluster(args, workload)
        elif args.gpu:
            tp = None if args.tp == "auto" else int(args.tp)
            plan = make_plan(args.model, args.gpu, args.quant, tp=tp,
                             max_model_len=args.max_model_len, workload=workload,
                             gpu_memory_utilization=args.gpu_memory_utilization,
                             max_pixels=pixels)
        else:
            plans = matrix(workload, args.gpu_memory_utilization)
            if args.json:
                print(json.dumps([_summary(p) for p in plans], indent=1))
            else:
                print(render_matrix(plans, workload))
            return 0
    except ValueError as e:
        print(f"qvl plan: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**plan.model_dump(), "min_vram_gib": min_vram_gib(plan)}, indent=2))
    else:
        print(render_plan(plan, min_vram_gib(plan)))
    return 0 if plan.fits else 1


def _run_cluster(args: argparse.Namespace, workload) -> int:
    from serving.parallel import plan_cluster
    from serving.settings import build_vllm_args

    cp = plan_cluster(args.model, args.gpu, args.quant, gpus_per_node=args.gpus_per_node,
                      nodes=args.nodes, workload=workload,
                      gpu_memory_utilization=args.gpu_memory_utilization)
    args_ = build_vllm_args(cp.settings()) if cp.fits else []
    if args.json:
        print(json.dumps({**cp.model_dump(exclude={"plan"}), "vllm_args": args_}, indent=2))
        return 0 if cp.fits else 1
    rows = [("fits", "yes" if cp.fits else "NO"),
            ("GPUs", f"{args.nodes} node(s) x {args.gpus_per_node} {cp.card}"),
            ("model", f"{cp.model} {cp.quant}")]
    if cp.fits:
        rows += [("engine", f"TP={cp.tp} x PP={cp.pp} = {cp.tp * cp.pp} GPU(s), executor "
                            f"{cp.executor}, layers per stage {cp.layers_per_stage}"),
                 ("replicas", str(cp.replicas)),
                 ("KV cache", f"{cp.plan.kv_cache_tokens:,} tokens per engine"),
                 ("concurrency", f"{cp.plan.max_num_seqs} requests per engine")]
    out = [f"{k:<14} {v}" for k, v in rows] + [f"note: {n}" for n in cp.notes]
    if args_:
        out += ["vLLM arguments (one engine):", "  " + shlex.join(args_)]
    print("\n".join(out))
    return 0 if cp.fits else 1


def _summary(p) -> dict:
    return {"model": p.model, "quant": p.quant, "card": p.card, "fits": p.fits,
            "weights_gib": p.weights_gib, "kv_cache_tokens": p.kv_cache_tokens,
            "max_num_seqs": p.max_num_seqs if p.fits else 0}


def render_plan(p, min_vram: float) -> str:
    rows = [
        ("fits", "yes" if p.fits else f"NO - {p.reason}"),
        ("model", f"{p.model} ({p.checkpoint or p.hub_id})"),
        ("card", f"{p.card} x{p.tensor_parallel_size} (TP={p.tensor_parallel_size})"),
        ("quantization", f"{p.quant} -> --quantization {p.quantization or '(none)'}"),
        ("dtype", p.dtype),
        ("weights / GPU", f"{p.weights_gib:.2f} GiB"),
        ("activations", f"{p.activation_gib:.2f} GiB"),
        ("vLLM may use", f"{p.usable_gib:.2f} GiB (gpu_memory_utilization {p.gpu_memory_utilization:g})"),
        ("KV cache", f"{p.kv_cache_gib:.2f} GiB = {p.kv_cache_tokens:,} tokens "
                     f"({p.kv_bytes_per_token:,} bytes/token)"),
        ("request", f"{p.seq_tokens} tokens ({p.image_tokens} per image)"),
        ("max_model_len", f"{p.max_model_len:,}"),
        ("max_num_seqs", f"{p.max_num_seqs} concurrent requests of that shape"),
        ("min VRAM", f"{min_vram:g} GiB"),
    ]
    width = max(len(k) for k, _ in rows)
    out = [f"{k:<{width}}  {v}" for k, v in rows]
    if p.alternatives:
        out.append("would fit instead:")
        out += [f"  - {a}" for a in p.alternatives]
    if p.fits:
        out.append("vLLM arguments:")
        out.append("  " + shlex.join(p.vllm_args))
    out.append("rules applied:")
    out += [f"  - {r}" for r in p.rules]
    return "\n".join(out)


def render_matrix(plans, workload) -> str:
    from serving.catalog import cards

    card_keys = list(cards())
    head = (f"Concurrent requests that fit (1 GPU, {workload.images} image(s) "
            f"{workload.image_width}x{workload.image_height} + {workload.text_tokens} text + "
            f"{workload.output_tokens} output tokens); '-' = does not fit\n")
    lines = [head, f"{'model':<10} {'quant':<6} {'weights':>8}  " +
             " ".join(f"{c:>9}" for c in card_keys)]
    by_key = {(p.model, p.quant, p.card): p for p in plans}
    for model, quant in dict.fromkeys((p.model, p.quant) for p in plans):
        first = by_key[(model, quant, card_keys[0])]
        cells = []
        for c in card_keys:
            p = by_key[(model, quant, c)]
            cells.append(f"{p.max_num_seqs:>9}" if p.fits else f"{'-':>9}")
        lines.append(f"{model:<10} {quant:<6} {first.weights_gib:>6.1f}G  " + " ".join(cells))
    return "\n".join(lines)
