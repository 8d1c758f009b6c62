"""Workloads: what each benchmark request carries.

Synthetic: images of chosen sizes, unique bytes per request (so prefix and multimodal caches do
not flatter the numbers) or a set share reused from a small pool (to exercise them), a prompt of
about N text tokens, a fixed output length (`ignore_eos`). File-based: JSONL lines of
`{"images": [paths], "prompt": "...", "max_tokens": N}` for real data.

Requests are built (images encoded) before the clock starts, so the runner measures the server.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from serving.checkpoint import PROMPT_WORDS as WORDS


class Workload(BaseModel):
    """A synthetic request mix. Defaults: the issue's reference workload."""
    image_width: int = Field(1024, gt=0)
    image_height: int = Field(768, gt=0)
    images_per_request: int = Field(1, ge=0)
    text_tokens: int = Field(50, ge=1, description="approximate prompt words (~1 token each)")
    output_tokens: int = Field(128, ge=1)
    reuse_ratio: float = Field(0.0, ge=0, le=1, description="share of images from a pool of 8")
    image_format: str = "JPEG"
    seed: int | None = Field(None, ge=0, description="None: a fresh random seed per run, so no "
                             "two runs share an image; set it to draw the same images again")

    def seeded(self) -> "Workload":
        """This workload with its seed fixed (a fresh random one when it has none)."""
        return self if self.seed is not None else \
            self.model_copy(update={"seed": random.SystemRandom().randrange(2**31)})

    def label(self) -> str:
        return (f"{self.images_per_request}x{self.image_width}x{self.image_height} img + "
                f"~{self.text_tokens} text + {self.output_tokens} out"
                + (f", reuse {self.reuse_ratio:g}" if self.reuse_ratio else ""))


@dataclass
class BenchRequest:
    """A ready-to-send chat request body (streaming, usage included) and its image count."""
    body: dict
    images: int


def synthetic_image(width: int, height: int, seed: int, fmt: str = "JPEG") -> bytes:
    """A unique image per seed (the same bytes for the same seed): a random two-colour gradient
    plus Gaussian noise, so the bytes differ and the content is not trivially compressible
    (like a photo, unlike a flat colour)."""
    import numpy as np
    from PIL import Image, ImageChops

    rnd = random.Random(seed)
    grad = Image.linear_gradient("L").resize((width, height))
    c1 = tuple(rnd.randrange(256) for _ in range(3))
    c2 = tuple(rnd.randrange(256) for _ in range(3))
    base = Image.merge("RGB", [grad.point(lambda v, a=a, b=b: a + (b - a) * v // 255)
                               for a, b in zip(c1, c2)])
    gen = np.random.default_rng(seed)
    noise = gen.standard_normal((height, width), dtype=np.float32) * (24 + seed % 8) + 128
    noise = Image.fromarray(noise.clip(0, 255).astype(np.uint8), "L").convert("RGB")
    img = ImageChops.add(base, noise, scale=2.0)
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


def data_url(data: bytes, fmt: str = "PNG") -> str:
    mime = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}[fmt.upper()]
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _body(model: str, urls: list[str], prompt: str, max_tokens: int) -> dict:
    content = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    content.append({"type": "text", "text": prompt})
    return {"model": model, "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}}


def build_requests(w: Workload, model: str, n: int, offset: int = 0) -> list[BenchRequest]:
    """`n` requests; `offset` shifts the seeds so warm-up and levels of one run (one seed)
    never share an image; a workload without a seed draws a fresh one per call.
    The unique images are drawn on several threads; the result is the same as drawing them
    one by one."""
    w = w.seeded()
    rnd = random.Random(w.seed * 1_000_003 + offset)
    pool = _draw_all(w, [10_000_000 + i for i in range(8)]) if w.reuse_ratio else []
    plan: list[tuple[list, str]] = []     # per request: pooled URLs or seeds to draw, prompt
    for i in range(n):
        items: list = []
        for j in range(w.images_per_request):
            if pool and rnd.random() < w.reuse_ratio:
                items.append(rnd.choice(pool))
            else:
                items.append((w.seed << 32) + (offset + i) * 16 + j)
        plan.append((items, " ".join(rnd.choice(WORDS) for _ in range(w.text_tokens))))
    seeds = [x for items, _ in plan for x in items if isinstance(x, int)]
    drawn = dict(zip(seeds, _draw_all(w, seeds)))
    return [BenchRequest(_body(model, [drawn[x] if isinstance(x, int) else x for x in items],
                               prompt, w.output_tokens), len(items))
            for items, prompt in plan]


def _draw_one(args: tuple[int, int, int, str]) -> str:
    width, height, seed, fmt = args
    return data_url(synthetic_image(width, height, seed, fmt), fmt)


def _draw_all(w: Workload, seeds: list[int]) -> list[str]:
    """Data URLs of the images of `seeds`, in order, on up to 8 threads (NumPy and the JPEG
    encoder release the GIL)."""
    jobs = [(w.image_width, w.image_height, s, w.image_format) for s in seeds]
    workers = min(8, os.cpu_count() or 1, max(1, len(jobs) // 8))
    if workers < 2:
        return [_draw_one(j) for j in jobs]
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(_draw_one, jobs))


def load_jsonl(path: str | Path, model: str, default_max_tokens: int = 128) -> list[BenchRequest]:
    """Requests from a JSONL file; image paths are read and inlined (relative to the file)."""
    from qvl_client.images import prepare_image

    path = Path(path)
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            images = row.get("images", row.get("image", []))
            images = [images] if isinstance(images, str) else images
            urls = [prepare_image(p if str(p).startswith(("http", "data:"))
                                  else path.parent / p, max_pixels=16_777_216).url
                    for p in images]
            body = _body(model, urls, row["prompt"], int(row.get("max_tokens",
                                                                  default_max_tokens)))
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{path}:{n}: bad workload line ({e})") from e
        out.append(BenchRequest(body, len(urls)))
    if not out:
        raise ValueError(f"{path}: no requests")
    return out
