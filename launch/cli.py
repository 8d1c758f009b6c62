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
    p.add_argument("--profile", help="a named profile (see `qvl profiles`) or a YAML file; "
                                     "other flags override it")
    p.add_argument("--served-model-name", help="the name clients send (default: --model)")
    p.add_argument("--host", help="bind address (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, help="default 8000")
    p.add_argument("--dtype", help="auto (default), half, bfloat16, float32")
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--max-images", type=int, help="images per request (default 4)")
    p.add_argument("--max-videos", type=int, help="videos per request (default 0)")
    p.add_argument("--max-pixels", type=int, help="pixel budget per image")
    p.add_argument("--api-key", default=os.environ.get("QVL_API_KEY"),
                   help="require this bearer token (default: $QVL_API_KEY)")
    p.add_argument("--tensor-parallel-size", type=int, help="GPUs per replica")
    p.add_argument("--pipeline-parallel-size", type=int,
                   help="pipeline stages (nodes, usually; needs Ray: see `qvl ray`)")
    p.add_argument("--api-server-count", type=int,
                   help="frontend processes (HTTP, image decoding, HF processor)")
    p.add_argument("--max-queued", type=int,
                   help="requests in flight before new ones get 503 + Retry-After")
    p.add_argument("--allowed-media-domain", action="append", dest="allowed_media_domains",
                   help="a domain image/video URLs may point to (repeat); default: none, "
                        "remote media URLs are refused")
    p.add_argument("--no-guard", dest="guard", action="store_false", default=None,
                   help="do not load qvl's guard middleware into vLLM (see SECURITY.md)")
    p.add_argument("--shutdown-timeout", type=int,
                   help="seconds in-flight requests may take to finish on SIGTERM (default 30)")
    p.add_argument("--cpu-kv-cache-gib", type=int,
                   help="KV cache size for vLLM's CPU build (VLLM_CPU_KVCACHE_SPACE)")
    p.add_argument("--max-restarts", type=int, default=3,
                   help="restarts after the engine dies before giving up")
    p.add_argument("--ready-timeout", type=float, default=900.0,
                   help="seconds to wait for the server to answer")
    p.add_argument("vllm_args", nargs=argparse.REMAINDER,
                   help="after `--`: extra vLLM arguments, passed through")
    p.set_defaults(func=_run_serve)


def settings_from_args(args: argparse.Namespace):
    """The ServeSettings of parsed `qvl serve` arguments. Raises ValueError (with the reason)."""
    from pydantic import ValidationError

    from serving.profiles import load_profile
    from serving.settings import ServeSettings

    if not args.model and not args.profile:
        raise ValueError("pass --model DIR_OR_HUB_ID or --profile NAME")
    extra = args.vllm_args[1:] if args.vllm_args[:1] == ["--"] else args.vllm_args
    given = dict(
        model=args.model, served_model_name=args.served_model_name, host=args.host,
        port=args.port, dtype=args.dtype, max_model_len=args.max_model_len,
        max_images=args.max_images, max_videos=args.max_videos, max_pixels=args.max_pixels,
        api_key=args.api_key, shutdown_timeout=args.shutdown_timeout,
        tensor_parallel_size=args.tensor_parallel_size,
        pipeline_parallel_size=args.pipeline_parallel_size,
        api_server_count=args.api_server_count, cpu_kv_cache_gib=args.cpu_kv_cache_gib,
        max_queued=args.max_queued, allowed_media_domains=args.allowed_media_domains,
        guard=args.guard)
    given = {k: v for k, v in given.items() if v is not None}
    try:
        settings = load_profile(args.profile).settings(**given) if args.profile \
            else ServeSettings(**given)
        if extra:
            settings = settings.model_copy(update={"extra_args": settings.extra_args + extra})
    except ValidationError as e:
        raise ValueError(f"invalid settings:\n{e}") from e
    return settings


def _run_serve(args: argparse.Namespace) -> int:
    from launch.supervisor import RestartPolicy, Supervisor

    try:
        settings = settings_from_args(args)
    except ValueError as e:
        print(f"qvl serve: error: {e}", file=sys.stderr)
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


def _add_profiles(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profiles", help="list the named launch profiles")
    p.set_defaults(func=_run_profiles)


def _run_profiles(args: argparse.Namespace) -> int:
    from serving.profiles import load_profile, profile_names

    for name in profile_names():
        p = load_profile(name)
        print(f"{name:<18} {p.model:<14} {p.quant:<6} {p.card:<9} TP={p.tp}  "
              f"min {p.min_vram_gib if p.min_vram_gib is not None else '-'} GiB  "
              f"verified on: {p.verified_on}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qvl", description="Qwen3-VL on vLLM: plan, serve, load-test and report.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from launch import ask_cmd, bench_cmd, k8s_cmd, plan_cmd, ray_cmd

    for add in (_add_serve, plan_cmd.add_parser, _add_profiles, ask_cmd.add_parser,
                bench_cmd.add_parsers, ray_cmd.add_parser, k8s_cmd.add_parser, _add_tiny_model,
                _add_demo):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
