"""The client's token arithmetic equals the model processor's own."""

from __future__ import annotations

import pytest

from qvl_client.vision import image_tokens, smart_resize

SIZES = [(1024, 768), (448, 336), (4000, 3000), (32, 32), (100, 5000), (1920, 1080),
         (333, 777), (8000, 8000)]


@pytest.mark.parametrize("w,h", SIZES)
@pytest.mark.parametrize("max_pixels", [16_777_216, 1_048_576, 200_704])
def test_matches_transformers_smart_resize(w, h, max_pixels):
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf

    assert smart_resize(h, w, max_pixels=max_pixels) == hf(h, w, factor=32, min_pixels=65536,
                                                           max_pixels=max_pixels)


def test_token_count_examples():
    assert image_tokens(1024, 768) == 32 * 24 + 2
    assert image_tokens(1024, 768, with_markers=False) == 768
    assert image_tokens(8000, 8000, max_pixels=1_048_576) <= 1024 + 2


def test_bad_sizes():
    with pytest.raises(ValueError, match="positive"):
        smart_resize(0, 10)
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 5000)


def test_parse_size():
    from qvl_client.vision import parse_size

    assert parse_size("1024x768") == (1024, 768) and parse_size(" 32X16 ") == (32, 16)
    for bad in ("1024", "axb", "0x10", "10x10x3"):
        with pytest.raises(ValueError, match="image size"):
            parse_size(bad)
