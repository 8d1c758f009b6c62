"""Check the planner's memory model against vLLM on a real GPU, emulating smaller cards.

For each case (model shape, quantization, card) this writes a random-weight checkpoint of the
real shape (no weights: vLLM draws them, `--load-format dummy`), plans it for the card, caps
vLLM's memory with `--gpu-memory-utilization` so that it may use exactly what it would on that
card (card GiB x 0.9), starts vLLM through qvl's own supervisor with the planner's arguments,
sends one real image request, and records what vLLM logged next to what the planner said:
weights, KV-cache tokens, and whether it started at all.

    python -m loadtests.memory_check --cases 8b:bf16:t4,8b:awq:t4 --out results.json
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import sys
import time
from pathlib import Path

AWQ_CONFIG = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True,
              "version": "gemm", "modules_to_not_convert": ["visual"]}

PATTERNS = {
    "vllm_weights_gib": re.compile(r"Model loading took ([\d.]+) GiB"),
    "vllm_kv_gib": re.compile(r"Available KV cache memory: ([\d.]+) GiB"),
    "vllm_kv_tokens": re.compile(r"GPU KV cache size: ([\d,]+) tokens"),
    "vllm_cudagraph_gib": re.compile(r"CUDA graph pool memory: ([\d.]+) GiB \(actual\)"),
    "vllm_max_concurrency": re.compile(r"Maximum concurrency for [\d,]+ tokens per request: "
                                       r"([\d.]+)x"),
}


def parse_log(lines: list[str]) -> dict:
    out: dict = {}
    for line in lines:
        for key, pat in PATTERNS.items():
            m = pat.search(line)
            if m and key not in out:
                out[key] = float(m.group(1).replace(",", ""))
    return out


CKPT_ROOT = Path("/tmp/qvl-ckpt")  # the generated configs (no weights) the GPU tools serve


def checkpoint_for(shape: str, quant: str, root: Path) -> Path:
    from serving.checkpoint import write_checkpoint

    fmt = "awq" if quant == "awq" else "bf16"
    path = root / f"{shape}-{fmt}"
    if not (path / "config.json").exists():
        write_checkpoint(path, shape, weights=False,
                         quantization_config=AWQ_CONFIG if fmt == "awq" else None)
    return path


def one_image_request(base_url: str, model: str) -> dict:
    import httpx
    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((1024, 768), 64).convert("RGB").save(buf, "JPEG")
    url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    t0 = time.perf_counter()
    r = httpx.post(f"{base_url}/chat/completions", timeout=120, json={
        "model": model, "max_tokens": 16, "ignore_eos": True, "messages": [{"role": "user",
        "content": [{"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": "Describe this image."}]}]})
    r.raise_for_status()
    return {"status": r.status_code, "latency_s": round(time.perf_counter() - t0, 3),
            "usage": r.json()["usage"]}


def run_case(shape: str, quant: str, card: str, root: Path, port: int, log_dir: Path) -> dict:
    import torch

    from launch.supervisor import StartupError, VllmProcess
    from serving.catalog import find_card
    from serving.planner import make_plan

    plan = make_plan(shape, card, quant, tp=1, suggest=False)
    total_gib = torch.cuda.mem_get_info()[1] / 2**30
    usable = find_card(card).memory_gib * plan.gpu_memory_utilization
    util = round(usable / total_gib, 4)
    # a plan that does not fit has no max_model_len: try it anyway, to see vLLM refuse it too
    settings = plan.settings(model=str(checkpoint_for(shape, quant, root)), load_format="dummy",
                             gpu_memory_utilization=util, port=port, served_model_name="m",
                             max_model_len=plan.max_model_len if plan.fits else 4096)
    rec = {"case": f"{shape}:{quant}:{card}", "card_gib": find_card(card).memory_gib,
           "device_total_gib": round(total_gib, 2), "emulated_util": util,
           "planner": {k: getattr(plan, k) for k in (
               "fits", "reason", "weights_gib", "activation_gib", "kv_cache_gib",
               "kv_cache_tokens", "max_num_seqs", "max_model_len", "max_num_batched_tokens",
               "usable_gib")}}
    from serving.settings import build_vllm_args
    rec["vllm_args"] = build_vllm_args(settings)
    log_path = log_dir / f"{shape}-{quant}-{card}.log"
    with open(log_path, "w") as log:
        proc = VllmProcess(settings, log_prefix="", log_out=log)
        t0 = time.monotonic()
        proc.start()
        try:
            rec["ready_s"] = round(proc.wait_ready(timeout=420), 1)
            rec["started"] = True
            rec["request"] = one_image_request(settings.base_url, "m")
        except StartupError as e:
            rec["started"], rec["error"] = False, str(e)
            rec["ready_s"] = round(time.monotonic() - t0, 1)
        except Exception as e:  # noqa: BLE001 - recorded, next case goes on
            rec["started"], rec["error"] = True, f"request failed: {e}"
        finally:
            proc.terminate()
            time.sleep(3)
            proc.kill()
    rec["vllm"] = parse_log(list(proc.lines) + log_path.read_text().splitlines())
    kv = rec["vllm"].get("vllm_kv_tokens")
    if kv:
        rec["kv_tokens_error_pct"] = round(100 * (plan.kv_cache_tokens - kv) / kv, 1)
    w = rec["vllm"].get("vllm_weights_gib")
    if w:
        rec["weights_error_pct"] = round(100 * (plan.weights_gib - w) / w, 1)
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", required=True, help="comma list of shape:quant:card")
    ap.add_argument("--out", required=True)
    ap.add_argument("--ckpt-root", default=str(CKPT_ROOT))
    ap.add_argument("--log-dir", default="/tmp/qvl-logs")
    a = ap.parse_args(argv)
    root, logs = Path(a.ckpt_root), Path(a.log_dir)
    logs.mkdir(parents=True, exist_ok=True)
    results = []
    for i, case in enumerate(a.cases.split(",")):
        shape, quant, card = case.split(":")
        rec = run_case(shape, quant, card, root, 8100 + i, logs)
        results.append(rec)
        print(json.dumps({k: rec.get(k) for k in ("case", "started", "ready_s", "error",
                                                  "kv_tokens_error_pct", "weights_error_pct")}
                         | {"planner_kv": rec["planner"]["kv_cache_tokens"],
                            "vllm": rec["vllm"]}), flush=True)
        Path(a.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
