"""The image pipeline: inputs, modes, EXIF, budgets; bad inputs fail before any request."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from qvl_client import ImageInputError, load_image, prepare_image
from qvl_client.vision import image_tokens


def png_bytes(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def decode(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


@pytest.mark.parametrize("size", [(1024, 768), (4000, 3000), (300, 200), (5000, 100)])
def test_resized_to_the_processors_size_and_token_cost(size):
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    budget = 1024 * 1024
    p = prepare_image(Image.new("RGB", size, (10, 200, 30)), max_pixels=budget)
    h, w = smart_resize(size[1], size[0], factor=32, min_pixels=65536, max_pixels=budget)
    assert (p.width, p.height) == (w, h) == decode(p.url).size
    assert p.width % 32 == 0 and p.height % 32 == 0 and p.width * p.height <= budget
    assert p.tokens == (w // 32) * (h // 32) + 2 == image_tokens(*size, max_pixels=budget)
    assert p.original_size == size


def test_all_input_kinds(tmp_path):
    import numpy as np

    img = Image.new("RGB", (64, 48), (1, 2, 3))
    path = tmp_path / "x.png"
    img.save(path)
    data = png_bytes(img)
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    arr = np.zeros((48, 64, 3), dtype=np.uint8)
    for src in (str(path), path, data, bytearray(data), img, arr, url):
        assert load_image(src).size == (64, 48)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (400, 200), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: stored landscape, shown portrait
    jpeg = png_bytes(img, "JPEG", exif=exif.tobytes())
    p = prepare_image(jpeg, max_pixels=1024 * 1024)
    assert p.height > p.width


@pytest.mark.parametrize("mode", ["CMYK", "P", "L", "LA", "RGBA", "I;16", "1"])
def test_modes_become_rgb(mode):
    img = Image.new("RGB", (100, 80), (0, 0, 255)).convert(mode) if mode != "I;16" else \
        Image.new("I;16", (100, 80), 40000)
    out = decode(prepare_image(img, fmt="PNG").url)
    assert out.mode == "RGB"


def test_alpha_is_composited_on_white():
    img = Image.new("RGBA", (64, 64), (255, 0, 0, 0))  # fully transparent red
    out = decode(prepare_image(img, fmt="PNG").url).convert("RGB")
    assert out.getpixel((5, 5)) == (255, 255, 255)


def test_output_formats():
    img = Image.new("RGB", (256, 256))
    assert prepare_image(img, fmt="webp").url.startswith("data:image/webp;base64,")
    assert prepare_image(img, fmt="png").url.startswith("data:image/png;base64,")
    with pytest.raises(ImageInputError, match="output format"):
        prepare_image(img, fmt="tiff")


def test_url_passed_through_unseen():
    p = prepare_image("https://example.invalid/cat.jpg", inline_urls=False)
    assert p.url == "https://example.invalid/cat.jpg" and p.tokens is None


@pytest.mark.parametrize("src, message", [
    ("/no/such/file.jpg", "/no/such/file.jpg: no such file"),
    (b"", "empty input"),
    (b"this is not an image at all", "not an image"),
    ("data:image/png;base64,@@@", "malformed data URL"),
    (12345, "unsupported image input type"),
])
def test_bad_inputs_are_named(src, message):
    with pytest.raises(ImageInputError, match=message):
        prepare_image(src)


def test_truncated_image():
    data = png_bytes(Image.effect_noise((256, 256), 50).convert("RGB"), "JPEG")
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        prepare_image(data[: len(data) // 2])


def test_zero_size_and_extreme_aspect():
    with pytest.raises(ImageInputError, match="aspect ratio"):
        prepare_image(Image.new("RGB", (10000, 10)))
    with pytest.raises(ImageInputError, match="zero-size"):
        load_image(Image.new("RGB", (0, 10)))


def test_huge_image_refused_before_decoding():
    # A 20000x20000 PNG header: refused on its size, without decoding 1.2 GB of pixels.
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
    png = b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    with pytest.raises(ImageInputError) as e:
        prepare_image(png)
    assert "20000" in str(e.value) or "decompression bomb" in str(e.value)
