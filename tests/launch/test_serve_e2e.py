"""`qvl serve` end to end: a real vLLM CPU server on the tiny model, spoken to with the OpenAI SDK."""

from __future__ import annotations

import httpx
import openai
import pytest

from launch.demo import data_url, demo_image
from tests.conftest import SERVED_NAME

pytestmark = pytest.mark.e2e


def image_part(w=448, h=336, seed=0):
    return {"type": "image_url", "image_url": {"url": data_url(demo_image(w, h, seed))}}


def ask(client, content, **kw):
    return client.chat.completions.create(
        model=SERVED_NAME, messages=[{"role": "user", "content": content}],
        max_tokens=kw.pop("max_tokens", 8), extra_body={"ignore_eos": True}, **kw)


def test_models_lists_the_served_name(openai_client):
    assert [m.id for m in openai_client.models.list().data] == [SERVED_NAME]


def test_text_only(openai_client):
    r = ask(openai_client, "Say something.", max_tokens=5)
    assert r.usage.completion_tokens == 5
    assert r.usage.prompt_tokens > 3
    assert isinstance(r.choices[0].message.content, str)


def test_one_image_costs_image_tokens(openai_client):
    text_only = ask(openai_client, [{"type": "text", "text": "Describe."}])
    with_image = ask(openai_client, [image_part(448, 336), {"type": "text", "text": "Describe."}])
    # 448x336 -> resized to a multiple of 32 (448x320 or 448x352): 14 x 10-11 merged tokens,
    # plus <|vision_start|> and <|vision_end|>
    extra = with_image.usage.prompt_tokens - text_only.usage.prompt_tokens
    assert 14 * 10 + 2 <= extra <= 14 * 11 + 2, extra


def test_two_images(openai_client):
    one = ask(openai_client, [image_part(seed=1), {"type": "text", "text": "Compare."}])
    two = ask(openai_client, [image_part(seed=1), image_part(seed=2),
                              {"type": "text", "text": "Compare."}])
    assert two.usage.prompt_tokens > one.usage.prompt_tokens + 100
    assert two.usage.completion_tokens == 8


def test_streaming_reports_usage(openai_client):
    stream = openai_client.chat.completions.create(
        model=SERVED_NAME, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": [image_part(), {"type": "text", "text": "Go."}]}],
        max_tokens=12, extra_body={"ignore_eos": True})
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert len(pieces) >= 2  # really streamed, not one blob
    assert usage is not None and usage.completion_tokens == 12 and usage.prompt_tokens > 100


def test_over_the_image_limit_is_a_4xx(openai_client):
    with pytest.raises(openai.BadRequestError) as e:
        ask(openai_client, [image_part(seed=i) for i in range(3)] + [{"type": "text", "text": "?"}])
    assert e.value.status_code == 400
    assert "image" in str(e.value).lower()


def test_metrics_are_readable(vllm_server, openai_client):
    ask(openai_client, [image_part(seed=7), {"type": "text", "text": "count me"}])
    text = httpx.get(f"{vllm_server.root_url}/metrics", timeout=10).text
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                 "vllm:mm_cache_queries_total"):
        assert name in text, name
    prompt_total = [ln for ln in text.splitlines() if ln.startswith("vllm:prompt_tokens_total")]
    assert float(prompt_total[0].rsplit(" ", 1)[1]) > 100
