"""Qwen3-VL's image geometry: how an image is resized and how many tokens it costs.

Pure arithmetic, no imaging library: the same numbers the model's processor computes
(`smart_resize` of Qwen2-VL/Qwen3-VL image processors), so a caller can know an image's token
cost before sending it, and resize it client-side so the server never decodes pixels the model
would discard.
"""

from __future__ import annotations

import math

PATCH = 16  # vision patch size in pixels
MERGE = 2  # 2x2 patches are merged into one language-model token
FACTOR = PATCH * MERGE  # 32: image sides are resized to multiples of this
MIN_PIXELS = 65_536  # the published Qwen3-VL processor's shortest_edge (pixel count)
MAX_PIXELS = 16_777_216  # ... and longest_edge
MAX_ASPECT = 200


def parse_size(text: str) -> tuple[int, int]:
    """"1024x768" -> (1024, 768); a clear ValueError for anything else."""
    try:
        w, h = (int(x) for x in text.lower().strip().split("x"))
    except ValueError:
        raise ValueError(f"image size {text!r}: expected WIDTHxHEIGHT, e.g. 1024x768") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"image size {text!r}: width and height must be positive")
    return w, h


def smart_resize(height: int, width: int, *, factor: int = FACTOR,
                 min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """The (height, width) the processor resizes an image to: multiples of `factor`, with the
    pixel count inside [min_pixels, max_pixels] and the aspect ratio kept as well as that allows."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise ValueError(f"aspect ratio of {width}x{height} exceeds {MAX_ASPECT}:1")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def image_tokens(width: int, height: int, *, max_pixels: int = MAX_PIXELS,
                 min_pixels: int = MIN_PIXELS, with_markers: bool = True) -> int:
    """Prompt tokens one image costs: merged patches, plus <|vision_start|>/<|vision_end|>."""
    h, w = smart_resize(height, width, min_pixels=min_pixels, max_pixels=max_pixels)
    return (h // FACTOR) * (w // FACTOR) + (2 if with_markers else 0)


def vision_patches(width: int, height: int, *, max_pixels: int = MAX_PIXELS,
                   min_pixels: int = MIN_PIXELS) -> int:
    """Patches the vision encoder processes for one image (before the 2x2 merge)."""
    h, w = smart_resize(height, width, min_pixels=min_pixels, max_pixels=max_pixels)
    return (h // PATCH) * (w // PATCH)
