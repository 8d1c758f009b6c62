"""`qvl bench` (a load-test sweep, one result JSON) and `qvl report` (results -> MD + HTML)."""

from __future__ import annotations

import argparse
import os
import sys


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x.strip()]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="load-test a running server; write one result JSON",
                       description="Open-loop load test with vllm bench serve's metric "
                                   "definitions, swept over concurrency or request rate.")
    p.add_argument("--url", default=os.environ.get("QVL_BASE_URL", "http://127.0.0.1:8000/v1"))
    p.add_argument("--api-key", default=os.environ.get("QVL_API_KEY"))
    p.add_argument("--model", help="served model name (default: the server's first)")
    p.add_argument("--concurrency", default="1,4,16", help="comma list of levels")
    p.add_argument("--rate", default="", help="comma list of request rates (req/s) instead")
    p.add_argument("--burstiness", type=float, default=1.0, help="1 = Poisson arrivals")
    p.add_argument("--prompts", type=int, default=64, help="requests per level")
    p.add_argument("--warmup", type=int, default=8, help="unrecorded requests before a level")
    p.add_argument("--image-size", default="1024x768")
    p.add_argument("--images", type=int, default=1, help="images per request")
    p.add_argument("--text-tokens", type=int, default=50)
    p.add_argument("--output-tokens", type=int, default=128)
    p.add_argument("--reuse-ratio", type=float, default=0.0,
                   help="share of images drawn from a small pool (exercises caches)")
    p.add_argument("--seed", type=int, help="draw the same images and prompts as the run with "
                   "this seed (recorded in the result; default: a fresh one per run)")
    p.add_argument("--workload-file", help="JSONL of {images: [...], prompt, max_tokens}")
    p.add_argument("--slo-ttft-ms", type=float, default=2000)
    p.add_argument("--slo-tpot-ms", type=float, default=50)
    p.add_argument("--card", help="card key for the price and the report (e.g. h200, t4, cpu)")
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--price", type=float, help="$ per GPU-hour (overrides the catalog)")
    p.add_argument("--label", default="measured", choices=["measured", "emulated", "projected"])
    p.add_argument("--name", default="", help="run name in the report")
    p.add_argument("--quant", help="quantization of the served model (for the report)")
    p.add_argument("--server-args", default="", help="the server's flags, recorded as is")
    p.add_argument("--out", required=True, help="result JSON path")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_bench_cmd)

    r = sub.add_parser("report", help="merge result JSONs into a Markdown and an HTML report")
    r.add_argument("results", nargs="+", help="result JSON files or folders of them")
    r.add_argument("--out", required=True, help="output folder (report.md, report.html)")
    r.add_argument("--title", default="qvl load-test report")
    r.set_defaults(func=run_report_cmd)


def run_bench_cmd(a: argparse.Namespace) -> int:
    import shlex

    from pydantic import ValidationError

    from loadtests.bench import BenchConfig, run_bench, write_result
    from loadtests.metrics import format_point
    from loadtests.workload import Workload
    from qvl_client.vision import parse_size

    try:
        w, h = parse_size(a.image_size)
        cfg = BenchConfig(
            base_url=a.url, api_key=a.api_key, model=a.model,
            workload=Workload(image_width=w, image_height=h, images_per_request=a.images,
                              text_tokens=a.text_tokens, output_tokens=a.output_tokens,
                              reuse_ratio=a.reuse_ratio, seed=a.seed),
            workload_file=a.workload_file, concurrency=[int(x) for x in _floats(a.concurrency)],
            rates=_floats(a.rate), burstiness=a.burstiness, prompts_per_level=a.prompts,
            warmup=a.warmup, slo_ms={"ttft": a.slo_ttft_ms, "tpot": a.slo_tpot_ms},
            card=a.card, gpus=a.gpus, price_hour=a.price, label=a.label, name=a.name,
            quant=a.quant, server_args=shlex.split(a.server_args),
            progress=not a.no_progress)
    except (ValueError, ValidationError) as e:
        print(f"qvl bench: error: {e}", file=sys.stderr)
        return 2
    try:
        result = run_bench(cfg, command="qvl " + " ".join(sys.argv[1:]))
    except (RuntimeError, ValueError) as e:
        print(f"qvl bench: error: {e}", file=sys.stderr)
        return 1
    path = write_result(result, a.out)
    for p in result["points"]:
        print(format_point(p))
    c = result["cost"]
    if c.get("meets_slo"):
        print(f"at SLO: {c['images_per_gpu_hour']:.0f} images/GPU-hour"
              + (f", ${c['usd_per_1k_images']:.4f} per 1k images" if c.get("usd_per_1k_images")
                 else ""))
    else:
        print("no level met the SLO")
    print(f"wrote {path}")
    return 0


def run_report_cmd(a: argparse.Namespace) -> int:
    from loadtests.report import load_results, write_report

    try:
        results = load_results(a.results)
    except ValueError as e:
        print(f"qvl report: error: {e}", file=sys.stderr)
        return 2
    md, html = write_report(results, a.out, title=a.title)
    print(f"wrote {md} and {html}")
    return 0
