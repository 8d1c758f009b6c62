"""Image inputs: load from anything, fix orientation and mode, resize to the pixel budget,
encode as a data URL. Every failure is an `ImageInputError` (a ValueError) naming the input,
raised before any request is sent."""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from PIL import Image, ImageOps, UnidentifiedImageError

from qvl_client.vision import MAX_PIXELS, MIN_PIXELS, image_tokens, smart_resize

ImageSource = Union[str, os.PathLike, bytes, bytearray, Image.Image, Any]  # Any: numpy array

DEFAULT_MAX_PIXELS = 1024 * 1024  # ~1024 tokens per image; the model's own limit is 16.7 MP
MAX_INPUT_PIXELS = 100_000_000  # refuse to decode anything larger (decompression bombs)
MAX_INPUT_BYTES = 50 * 1024 * 1024
FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


class ImageInputError(ValueError):
    """An image that cannot be used, with the input named and the reason."""


@dataclass(frozen=True)
class PreparedImage:
    """An image ready to send: its data URL (or remote URL) and what it will cost."""

    url: str
    width: int | None  # size sent (None for a URL passed through unseen)
    height: int | None
    original_size: tuple[int, int] | None
    tokens: int | None  # prompt tokens it costs, incl. vision start/end markers
    label: str  # how the input was named, for messages

    def content_part(self) -> dict:
        return {"type": "image_url", "image_url": {"url": self.url}}


def _label(src: Any) -> str:
    if isinstance(src, (str, os.PathLike)):
        s = str(src)
        return s if len(s) < 120 else s[:60] + "..." + s[-40:]
    if isinstance(src, (bytes, bytearray)):
        return f"<{len(src)} bytes>"
    if isinstance(src, Image.Image):
        return f"<PIL image {src.size[0]}x{src.size[1]} {src.mode}>"
    return f"<{type(src).__name__}>"


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def _open_bytes(data: bytes, label: str) -> Image.Image:
    if not data:
        raise ImageInputError(f"{label}: empty input (0 bytes)")
    if len(data) > MAX_INPUT_BYTES:
        raise ImageInputError(f"{label}: {len(data) / 2**20:.0f} MiB is larger than the "
                              f"{MAX_INPUT_BYTES // 2**20} MiB an image may have")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageInputError(f"{label}: not an image in a format Pillow can read "
                              "(JPEG, PNG, WebP, GIF, BMP, TIFF, ...)") from None
    except Image.DecompressionBombError as e:
        raise ImageInputError(f"{label}: refused as a decompression bomb ({e})") from None
    return img


def _check_and_load(img: Image.Image, label: str) -> Image.Image:
    w, h = img.size
    if w == 0 or h == 0:
        raise ImageInputError(f"{label}: zero-size image ({w}x{h})")
    if w * h > MAX_INPUT_PIXELS:
        raise ImageInputError(f"{label}: {w}x{h} is {w * h / 1e6:.0f} MP, more than the "
                              f"{MAX_INPUT_PIXELS / 1e6:.0f} MP this client decodes; downscale "
                              "it first")
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageInputError(f"{label}: truncated or corrupt image data ({e})") from None
    except Image.DecompressionBombError as e:
        raise ImageInputError(f"{label}: refused as a decompression bomb ({e})") from None
    return img


def fetch_url(url: str, timeout: float = 30.0) -> bytes:
    import httpx

    try:
        r = httpx.get(url, timeout=timeout, follow_redirects=True)
        r.raise_for_status()
    except httpx.HTTPError as e:
        raise ImageInputError(f"{url}: could not be fetched ({e})") from None
    return r.content


def load_image(src: ImageSource) -> Image.Image:
    """Open a path, http(s) URL, bytes, PIL image or numpy array as a loaded PIL image."""
    label = _label(src)
    if isinstance(src, Image.Image):
        return _check_and_load(src, label)
    if isinstance(src, (bytes, bytearray)):
        return _check_and_load(_open_bytes(bytes(src), label), label)
    if isinstance(src, (str, os.PathLike)):
        s = str(src)
        if _is_url(s):
            return _check_and_load(_open_bytes(fetch_url(s), label), label)
        if s.startswith("data:"):
            try:
                data = base64.b64decode(s.split(",", 1)[1], validate=True)
            except (IndexError, ValueError):
                raise ImageInputError(f"{label}: malformed data URL") from None
            return _check_and_load(_open_bytes(data, label), label)
        path = Path(s).expanduser()
        if not path.is_file():
            raise ImageInputError(f"{label}: no such file")
        return _check_and_load(_open_bytes(path.read_bytes(), label), label)
    if hasattr(src, "__array_interface__"):  # numpy array: HxW, HxWx3 or HxWx4
        try:
            img = Image.fromarray(src)
        except (TypeError, ValueError) as e:
            raise ImageInputError(f"{label}: array cannot be an image ({e})") from None
        return _check_and_load(img, label)
    raise ImageInputError(f"{label}: unsupported image input type; pass a path, URL, bytes, "
                          "PIL image or numpy array")


def to_rgb(img: Image.Image) -> Image.Image:
    """EXIF orientation applied; CMYK, palette, 16-bit, grey and alpha images made RGB
    (transparency composited on white, which is what a viewer shows)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16/32-bit grey: stretch to 8 bit
        img = img.convert("F")
        lo, hi = img.getextrema()
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = img.point(lambda v: (v - lo) * scale).convert("L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    return img.convert("RGB") if img.mode != "RGB" else img


def prepare_image(src: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                  min_pixels: int = MIN_PIXELS, fmt: str = "JPEG", quality: int = 90,
                  inline_urls: bool = True) -> PreparedImage:
    """Load, normalise and resize `src` to the size the model will use, as a data URL.

    The image is resized (aspect kept) to the processor's own target size for `max_pixels`
    (sides multiples of 32), so the server decodes exactly the pixels the model sees. With
    `inline_urls=False` an http(s) URL is passed through for the server to fetch (token cost
    then unknown here).
    """
    fmt = fmt.upper()
    if fmt not in FORMATS:
        raise ImageInputError(f"output format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if not MIN_PIXELS <= max_pixels <= MAX_PIXELS:
        raise ValueError(f"max_pixels must be in [{MIN_PIXELS}, {MAX_PIXELS}], got {max_pixels}")
    label = _label(src)
    if isinstance(src, (str, os.PathLike)) and _is_url(str(src)) and not inline_urls:
        return PreparedImage(str(src), None, None, None, None, label)
    img = to_rgb(load_image(src))
    w0, h0 = img.size
    try:
        h, w = smart_resize(h0, w0, min_pixels=min_pixels, max_pixels=max_pixels)
    except ValueError as e:
        raise ImageInputError(f"{label}: {e}") from None
    if (w, h) != (w0, h0):
        img = img.resize((w, h), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": quality} if fmt in ("JPEG", "WEBP") else {}))
    url = f"data:{FORMATS[fmt]};base64," + base64.b64encode(buf.getvalue()).decode()
    tokens = image_tokens(w, h, max_pixels=max_pixels, min_pixels=min_pixels)
    return PreparedImage(url, w, h, (w0, h0), tokens, label)
