"""The thin client against the real vLLM CPU server of the test session."""

from __future__ import annotations

import asyncio

import openai
import pytest
from PIL import Image

from launch.demo import demo_image
from qvl_client import (AsyncVisionClient, BatchItemError, ImageInputError, Result, VisionClient,
                        prepare_image)
from tests.conftest import SERVED_NAME

pytestmark = pytest.mark.e2e
EOS = {"ignore_eos": True}  # random weights never stop on their own


@pytest.fixture()
def client(vllm_server):
    return VisionClient(vllm_server.base_url, "unused", extra_body=EOS, default_max_tokens=8)


def test_describe_reports_usage_timings_and_image_cost(client):
    img = Image.open(__import__("io").BytesIO(demo_image(640, 480, 3)))
    r = client.describe(img)
    assert isinstance(r, Result) and r.usage.completion_tokens == 8
    assert r.model == SERVED_NAME and r.finish_reason == "length"
    assert 0 < r.ttft_s <= r.total_s
    # the client's token arithmetic matches what the server counted
    text_only = client.ask(None, "Describe this image.")
    assert r.usage.prompt_tokens - text_only.usage.prompt_tokens == r.images[0].tokens


def test_streaming(client):
    pieces = list(client.stream(demo_image(448, 336, 1), "Go on.", max_tokens=12))
    assert len(pieces) >= 2 and all(isinstance(p, str) for p in pieces)


def test_batch_of_50_with_concurrency_8(client):
    items = [(demo_image(320 + 8 * i, 240, i), f"Caption {i}.") for i in range(49)]
    items.insert(17, (b"\x89PNG not really", "broken"))
    results = client.batch(items, concurrency=8, progress=True, max_tokens=4)
    assert len(results) == 50
    bad = [r for r in results if isinstance(r, BatchItemError)]
    assert [b.index for b in bad] == [17] and isinstance(bad[0].error, ImageInputError)
    good = [r for r in results if isinstance(r, Result)]
    assert len(good) == 49 and all(r.usage.completion_tokens == 4 for r in good)
    # ordered: prompt sizes follow the image widths of the inputs
    widths = [r.images[0].width for r in good]
    assert widths == [r.images[0].width for r in sorted(good, key=lambda r: r.images[0].original_size)]


def test_five_turn_conversation_with_images(client):
    conv = client.conversation(system="You are terse.")
    prompts = []
    for turn in range(5):
        # the cpu-tiny server allows 2 images per prompt, and history counts
        images = [demo_image(320, 240, 10 + turn)] if turn in (0, 3) else None
        r = conv.ask(f"Turn {turn}: what now?", images=images, max_tokens=6)
        prompts.append(r.usage.prompt_tokens)
    assert conv.turns == 5 and len(conv.messages) == 11
    assert prompts == sorted(prompts) and prompts[-1] > prompts[0] + 80  # history kept
    images_in_history = sum(1 for m in conv.messages if isinstance(m["content"], list)
                            for p in m["content"] if p["type"] == "image_url")
    assert images_in_history == 2


def test_async_batch(vllm_server):
    async def go():
        c = AsyncVisionClient(vllm_server.base_url, extra_body=EOS, default_max_tokens=4)
        return await c.batch([demo_image(256, 256, i) for i in range(10)], concurrency=4)

    results = asyncio.run(go())
    assert all(isinstance(r, Result) for r in results)


def test_video_frames_as_images(client, tmp_path):
    frames = [Image.new("RGB", (128, 96), (i * 40, 0, 0)) for i in range(6)]
    frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:], duration=500)
    r = client.ask_video(tmp_path / "clip.gif", "What happens?", fps=1.0, max_frames=2)
    assert len(r.images) == 2 and r.usage.completion_tokens == 8


def test_plain_openai_sdk_with_a_prepared_image(vllm_server):
    part = prepare_image(demo_image(500, 400, 5)).content_part()
    sdk = openai.OpenAI(base_url=vllm_server.base_url, api_key="unused")
    r = sdk.chat.completions.create(
        model=SERVED_NAME, max_tokens=3, extra_body=EOS,
        messages=[{"role": "user", "content": [part, {"type": "text", "text": "?"}]}])
    assert r.usage.completion_tokens == 3


def test_server_errors_are_not_retried(client):
    with pytest.raises(openai.BadRequestError):
        client.ask([demo_image(64, 64, i) for i in range(3)], "too many images")


def test_qvl_ask_cli(vllm_server, tmp_path):
    import subprocess
    import sys

    img = tmp_path / "x.png"
    img.write_bytes(demo_image(400, 300, 9))
    r = subprocess.run([sys.executable, "-m", "launch.cli", "ask", str(img), "What is it?",
                        "--url", vllm_server.base_url, "--max-tokens", "5", "--ignore-eos"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "[1 image(s), " in r.stderr and r.stdout.strip()
    bad = subprocess.run([sys.executable, "-m", "launch.cli", "ask", str(tmp_path / "none.png"),
                          "?", "--url", vllm_server.base_url], capture_output=True, text=True)
    assert bad.returncode == 2 and "none.png: no such file" in bad.stderr
