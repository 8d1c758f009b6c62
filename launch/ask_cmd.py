"""`qvl ask IMAGE "question" --url ...`: a quick check of a server with the thin client."""

from __future__ import annotations

import argparse
import os
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ask", help="ask a running server about an image (or video)",
                       description="Send images (paths or URLs) and a question; stream the answer.")
    p.add_argument("images", nargs="+", help="image paths/URLs, then the question last")
    p.add_argument("--url", default=os.environ.get("QVL_BASE_URL", "http://127.0.0.1:8000/v1"),
                   help="server base URL (default $QVL_BASE_URL or http://127.0.0.1:8000/v1)")
    p.add_argument("--api-key", default=os.environ.get("QVL_API_KEY"))
    p.add_argument("--model", help="served model name (default: the server's first)")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--max-pixels", type=int, default=1024 * 1024)
    p.add_argument("--video", action="store_true", help="the input is a video: sample frames")
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--max-frames", type=int, default=8)
    p.add_argument("--ignore-eos", action="store_true",
                   help="generate exactly --max-tokens (for random-weight test models)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import openai

    from qvl_client import ImageInputError, VisionClient

    if len(args.images) < 2:
        print("qvl ask: error: give at least one image and a question", file=sys.stderr)
        return 2
    *images, question = args.images
    client = VisionClient(args.url, args.api_key, model=args.model, max_pixels=args.max_pixels,
                          extra_body={"ignore_eos": True} if args.ignore_eos else None)
    try:
        if args.video:
            from qvl_client.video import sample_frames

            images = sample_frames(images[0], args.fps, args.max_frames)
        prepared = [client.prepare(i) for i in images]
        cost = sum(p.tokens or 0 for p in prepared)
        print(f"[{len(prepared)} image(s), {cost} image tokens]", file=sys.stderr)
        pieces = client.stream(prepared, question, max_tokens=args.max_tokens)
        for piece in pieces:
            print(piece, end="", flush=True)
        print()
    except ImageInputError as e:
        print(f"qvl ask: error: {e}", file=sys.stderr)
        return 2
    except openai.APIError as e:
        print(f"qvl ask: error from {args.url}: {e}", file=sys.stderr)
        return 1
    return 0
