"""`make demo`: the whole path on the embedded CPU default, end to end, on real parts.

Builds the tiny Qwen3-VL checkpoint, starts `qvl serve` on it (real vLLM, CPU build), sends real
image requests through the OpenAI SDK (one streamed), prints answers with usage and latency,
and stops the server cleanly. The model has random weights, so its answers are noise: what the
demo shows is the serving path, token accounting and latency.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

from loadtests.workload import data_url

# The CPU default lives in the cpu-tiny profile (serving/profiles/cpu-tiny.yaml): small context,
# two images per request, a pixel budget so the vision encoder is profiled at a size a 2-core
# machine handles in seconds.
TINY_SERVE_ARGS = ["--profile", "cpu-tiny"]


def demo_image(width: int, height: int, seed: int) -> bytes:
    """A synthetic PNG: gradient background and a few shapes (deterministic per seed)."""
    import random

    from PIL import Image, ImageDraw

    rnd = random.Random(seed)
    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rnd.randrange(width // 2), rnd.randrange(height // 2)
        box = (x0, y0, x0 + rnd.randrange(20, width // 2), y0 + rnd.randrange(20, height // 2))
        fill = tuple(rnd.randrange(256) for _ in range(3))
        (draw.ellipse if rnd.random() < 0.5 else draw.rectangle)(box, fill=fill)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def ensure_tiny_model(model_dir: str) -> None:
    if (Path(model_dir) / "config.json").exists():
        return
    from serving.checkpoint import write_checkpoint

    t0 = time.monotonic()
    s = write_checkpoint(model_dir, "tiny")
    print(f"built tiny Qwen3-VL checkpoint in {model_dir} ({s['parameters']:,} parameters, "
          f"{time.monotonic() - t0:.1f} s)")


def short_load_test(base_url: str, out_dir: str = ".runs") -> None:
    """A small sweep with `qvl bench`'s runner, then `qvl report` on it."""
    from loadtests.bench import BenchConfig, run_bench, write_result
    from loadtests.metrics import format_point
    from loadtests.report import write_report
    from loadtests.workload import Workload

    print("short load test: concurrency 1, 4, 8; 24 requests each (448x336 image, 16 tokens out)")
    cfg = BenchConfig(base_url=base_url, concurrency=[1, 4, 8], prompts_per_level=24,
                      warmup=2, card="cpu", name="demo-cpu-tiny", progress=False,
                      workload=Workload(image_width=448, image_height=336, output_tokens=16))
    result = run_bench(cfg, command="qvl demo")
    path = write_result(result, Path(out_dir) / "demo-bench.json")
    for p in result["points"]:
        print("  " + format_point(p))
    md, html = write_report([result], Path(out_dir) / "demo-report", title="qvl demo (CPU)")
    print(f"result {path}; report {md} and {html}\n")


def run(args: argparse.Namespace) -> int:
    from openai import OpenAI

    from launch.background import ServerHandle

    ensure_tiny_model(args.model_dir)
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    server = ServerHandle(["--model", args.model_dir, *TINY_SERVE_ARGS], port=args.port,
                          log_path=args.log)
    print(f"starting qvl serve on {server.base_url} (vLLM log: {args.log}) ...", flush=True)
    server.start()
    try:
        ready = server.wait_ready(timeout=600)
        print(f"server ready in {ready:.1f} s\n")
        client = OpenAI(base_url=server.base_url, api_key="unused", max_retries=2)
        img_a, img_b = data_url(demo_image(640, 480, 1)), data_url(demo_image(448, 336, 2))
        requests = [
            ("one image", [img_a], "Describe this image."),
            ("two images", [img_a, img_b], "What differs between these two images?"),
        ]
        for title, images, question in requests:
            content = [{"type": "image_url", "image_url": {"url": u}} for u in images]
            content.append({"type": "text", "text": question})
            t0 = time.perf_counter()
            r = client.chat.completions.create(
                model="qvl-tiny", messages=[{"role": "user", "content": content}],
                max_tokens=24, temperature=0, extra_body={"ignore_eos": True})
            dt = time.perf_counter() - t0
            print(f"[{title}] {question}\n  answer: {r.choices[0].message.content!r}\n"
                  f"  usage: {r.usage.prompt_tokens} prompt + {r.usage.completion_tokens} "
                  f"completion tokens, latency {dt * 1000:.0f} ms\n")
        t0 = time.perf_counter()
        ttft, text, usage = None, [], None
        stream = client.chat.completions.create(
            model="qvl-tiny", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": img_b}},
                {"type": "text", "text": "Stream a caption."}]}],
            max_tokens=32, temperature=0, extra_body={"ignore_eos": True})
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                ttft = ttft or time.perf_counter() - t0
                text.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
        total = time.perf_counter() - t0
        print(f"[streamed] Stream a caption.\n  answer: {''.join(text)!r}\n"
              f"  usage: {usage.prompt_tokens} prompt + {usage.completion_tokens} completion "
              f"tokens, TTFT {ttft * 1000:.0f} ms, total {total * 1000:.0f} ms\n")
        print("(random weights: the answers are noise; the tokens, timings and path are real)\n")
        short_load_test(server.base_url)
    finally:
        code = server.stop()
        print(f"server stopped (qvl serve exit code {code})")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(run(argparse.Namespace(model_dir=".models/tiny", port=8765,
                                    log=".runs/demo-server.log")))
