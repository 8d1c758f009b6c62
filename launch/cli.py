"""`qvl`: one command line for the whole stack.

Each subcommand lives in the module that implements it; this file only wires them up and keeps
imports lazy, so `qvl --help` and pure commands start fast (no torch, no vLLM).
"""

from __future__ import annotations

import argparse
import os
import sys


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="start vLLM's OpenAI-compatible server and keep it up",
        description="Start vLLM for a model directory or hub id, wait until it answers, "
                    "restart it if its engine dies, drain it on SIGINT/SIGTERM. Arguments after "
                    "`--` go to vLLM unchanged.")
    p.add_argument("--model", help="model directory or hub id")
    p.add_argument("--served-model-name", help="the name clients send (default: --model)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--dtype", default="auto", help="auto, half, bfloat16, float32")
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--max-images", type=int, default=4, help="images per request")
    p.add_argument("--max-videos", type=int, default=0, help="videos per request")
    p.add_argument("--max-pixels", type=int, help="pixel budget per image")
    p.add_argument("--api-key", default=os.environ.get("QVL_API_KEY"),
                   help="require this bearer token (default: $QVL_API_KEY)")
    p.add_argument("--shutdown-timeout", type=int, default=30,
                   help="seconds in-flight requests may take to finish on SIGTERM")
    p.add_argument("--cpu-kv-cache-gib", type=int,
                   help="KV cache size for vLLM's CPU build (VLLM_CPU_KVCACHE_SPACE)")
    p.add_argument("--max-restarts", type=int, default=3,
                   help="restarts after the engine dies before giving up")
    p.add_argument("--ready-timeout", type=float, default=900.0,
                   help="seconds to wait for the server to answer")
    p.add_argument("vllm_args", nargs=argparse.REMAINDER,
                   help="after `--`: extra vLLM arguments, passed through")
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from launch.supervisor import RestartPolicy, Supervisor
    from serving.settings import ServeSettings

    if not args.model:
        print("qvl serve: error: --model is required", file=sys.stderr)
        return 2
    extra = args.vllm_args[1:] if args.vllm_args[:1] == ["--"] else args.vllm_args
    try:
        settings = ServeSettings(
            model=args.model, served_model_name=args.served_model_name, host=args.host,
            port=args.port, dtype=args.dtype, max_model_len=args.max_model_len,
            max_images=args.max_images, max_videos=args.max_videos, max_pixels=args.max_pixels,
            api_key=args.api_key, shutdown_timeout=args.shutdown_timeout,
            cpu_kv_cache_gib=args.cpu_kv_cache_gib, extra_args=extra)
    except ValidationError as e:
        print(f"qvl serve: error: invalid settings:\n{e}", file=sys.stderr)
        return 2
    sup = Supervisor(settings, policy=RestartPolicy(max_restarts=args.max_restarts),
                     ready_timeout=args.ready_timeout)
    sup.install_signal_handlers()
    return sup.run()


def _add_tiny_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tiny-model", help="write a random-weight Qwen3-VL checkpoint (tiny, or real 8B/32B shape)",
        description="Write a seeded, randomly initialised checkpoint with the real Qwen3-VL "
                    "architecture that vLLM serves offline.")
    p.add_argument("out_dir")
    p.add_argument("--shape", default="tiny", choices=["tiny", "8b", "32b"])
    p.add_argument("--no-weights", action="store_true",
                   help="config/tokenizer/processor only; serve with --load-format dummy")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_tiny_model)


def _run_tiny_model(args: argparse.Namespace) -> int:
    from serving.checkpoint import write_checkpoint

    s = write_checkpoint(args.out_dir, args.shape, weights=not args.no_weights, seed=args.seed)
    params = "no weights" if s["parameters"] is None else f"{s['parameters']:,} parameters"
    print(f"wrote {s['path']} (Qwen3-VL {s['shape']} shape, {params}, seed {s['seed']})")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="serve the tiny model on CPU and send real image requests")
    p.add_argument("--model-dir", default=".models/tiny")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--log", default=".runs/demo-server.log")
    p.set_defaults(func=lambda a: __import__("launch.demo", fromlist=["run"]).run(a))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qvl", description="Qwen3-VL on vLLM: plan, serve, load-test and report.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_serve, _add_tiny_model, _add_demo):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
