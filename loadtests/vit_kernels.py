"""The vision tower's floor on this GPU: its GEMMs and attention timed alone, per image.

For a model shape from the catalog's checkpoint specs (Qwen3-VL-8B's tower: 27 blocks, width
1152, MLP 4304, 16 heads of 72) and an image of N patches, times on the GPU:

    gemm-bf16 / gemm-fp8   the four linear layers of one block (qkv, proj, fc1, fc2), BF16
                           `torch.mm` and FP8 `torch._scaled_mm` (per-tensor scales)
    attn-<backend>         one block's attention over `images` images of N patches each:
                           vLLM's flash-attention varlen (what its ViT uses), PyTorch SDPA
                           with its flash, cuDNN and memory-efficient backends

and writes per image: one block and the whole tower (x depth), so the measured encoder time of
a server (`encoder_probe`) can be set against what its kernels need.

    python -m loadtests.vit_kernels --patches 3072 --images 8 --out $OUT/vit-kernels.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _time(fn, iters: int = 20) -> float:
    """Median milliseconds of `fn()` on the GPU (CUDA events, after 3 warm-up calls)."""
    import torch
    for _ in range(3):
        fn()
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return sorted(times)[len(times) // 2]


def gemm_times(tokens: int, width: int, mlp: int) -> dict[str, float]:
    import torch
    shapes = [(width, 3 * width), (width, width), (width, mlp), (mlp, width)]
    out = {}
    xs = {k: torch.randn(tokens, k, device="cuda", dtype=torch.bfloat16) for k in (width, mlp)}
    ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for k, n in shapes]
    out["gemm-bf16"] = sum(_time(lambda k=k, w=w: torch.mm(xs[k], w.t())) for (k, _), w
                           in zip(shapes, ws))
    one = torch.ones((), device="cuda")
    x8 = {k: v.to(torch.float8_e4m3fn) for k, v in xs.items()}
    w8 = [w.to(torch.float8_e4m3fn) for w in ws]
    try:
        out["gemm-fp8"] = sum(_time(lambda k=k, w=w: torch._scaled_mm(
            x8[k], w.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16))
            for (k, _), w in zip(shapes, w8))
    except RuntimeError as e:  # no FP8 on this card
        out["gemm-fp8-error"] = str(e)[:200]
    return out


def attention_times(images: int, patches: int, heads: int, head_dim: int) -> dict[str, float]:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    out: dict = {}
    tokens = images * patches
    q, k, v = (torch.randn(tokens, heads, head_dim, device="cuda", dtype=torch.bfloat16)
               for _ in range(3))
    cu = torch.arange(0, tokens + 1, patches, device="cuda", dtype=torch.int32)
    try:
        from vllm.v1.attention.backends.fa_utils import (flash_attn_varlen_func,
                                                         get_flash_attn_version)
        ver = get_flash_attn_version(head_size=head_dim)
        out["attn-vllm-fa-version"] = ver
        out["attn-vllm-fa"] = _time(lambda: flash_attn_varlen_func(
            q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=patches,
            max_seqlen_k=patches, dropout_p=0.0, causal=False, fa_version=ver))
    except Exception as e:  # noqa: BLE001 - report, keep the other backends
        out["attn-vllm-fa-error"] = f"{type(e).__name__}: {e}"[:200]
    qb, kb, vb = (t.view(images, patches, heads, head_dim).transpose(1, 2) for t in (q, k, v))
    for name, backend in [("flash", SDPBackend.FLASH_ATTENTION),
                          ("cudnn", SDPBackend.CUDNN_ATTENTION),
                          ("efficient", SDPBackend.EFFICIENT_ATTENTION)]:
        try:
            with sdpa_kernel(backend):
                out[f"attn-sdpa-{name}"] = _time(
                    lambda: F.scaled_dot_product_attention(qb, kb, vb))
        except RuntimeError as e:
            out[f"attn-sdpa-{name}-error"] = str(e)[:200]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patches", type=int, default=3072, help="patches per image (1024x768: 3072)")
    ap.add_argument("--images", type=int, default=8, help="images per encoder batch")
    ap.add_argument("--depth", type=int, default=27)
    ap.add_argument("--width", type=int, default=1152)
    ap.add_argument("--mlp", type=int, default=4304)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    import torch
    tokens = a.images * a.patches
    raw = {**gemm_times(tokens, a.width, a.mlp),
           **attention_times(a.images, a.patches, a.heads, a.width // a.heads)}
    per_image = {k: v / a.images for k, v in raw.items()
                 if isinstance(v, float) and not k.endswith("version")}
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "args": vars(a), "per_batch_block_ms": raw, "per_image_block_ms": per_image,
              "per_image_tower_ms": {k: v * a.depth for k, v in per_image.items()}}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result["per_image_tower_ms"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
