"""Resilience with injected faults: what is retried, how long it waits, what never is."""

from __future__ import annotations

import asyncio
import socket
import time

import openai
import pytest
from PIL import Image

from qvl_client import (AsyncVisionClient, BatchItemError, Result, RetryPolicy, StreamBroken,
                        VisionClient)
from qvl_client.retry import is_retryable
from tests.clients.fake_server import FakeServer

FAST = RetryPolicy(max_retries=3, backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture()
def fake():
    servers = []

    def make(script):
        servers.append(FakeServer(script))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_503_with_retry_after_is_honoured(fake):
    srv = fake([("status", 503, 0.3), ("status", 503, 0.3), "ok"])
    client = VisionClient(srv.base_url, retry=FAST)
    t0 = time.monotonic()
    r = client.ask(None, "hi")
    assert r.text == "hello world" and r.attempts == 3 and srv.requests == 3
    assert time.monotonic() - t0 >= 0.6  # waited as the server said, not the 50 ms backoff
    assert r.usage.prompt_tokens == 7 and r.ttft_s is not None and r.total_s >= r.ttft_s


def test_429_is_retried(fake):
    srv = fake([("status", 429, None), "ok"])
    assert VisionClient(srv.base_url, retry=FAST).ask(None, "hi").attempts == 2


def test_400_is_not_retried(fake):
    srv = fake([("status", 400, None), "ok"])
    with pytest.raises(openai.BadRequestError):
        VisionClient(srv.base_url, retry=FAST).ask(None, "hi")
    assert srv.requests == 1


def test_500_is_not_retried(fake):
    srv = fake([("status", 500, None), "ok"])
    with pytest.raises(openai.InternalServerError):
        VisionClient(srv.base_url, retry=FAST).ask(None, "hi")
    assert srv.requests == 1


def test_no_retry_once_pieces_reached_the_caller(fake):
    srv = fake(["drop_mid_stream", "ok"])
    pieces = []
    with pytest.raises(StreamBroken):
        for p in VisionClient(srv.base_url, retry=FAST).stream(None, "hi"):
            pieces.append(p)
    assert pieces == ["hello"] and srv.requests == 1


def test_whole_result_call_retries_a_cut_stream(fake):
    # ask() hands nothing to the caller before the end: like a non-streaming request cut by
    # a crash, it is retried, and the partial answer is discarded
    srv = fake(["drop_mid_stream", "ok"])
    r = VisionClient(srv.base_url, retry=FAST).ask(None, "hi")
    assert r.text == "hello world" and r.attempts == 2 and srv.requests == 2


def test_connection_refused_retries_then_gives_up():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = VisionClient(f"http://127.0.0.1:{port}/v1", model="m", retry=FAST)
    with pytest.raises(openai.APIConnectionError):
        client.ask(None, "hi")


def test_backoff_is_jittered_and_capped():
    import random

    p = RetryPolicy(backoff_s=1.0, max_backoff_s=4.0)
    err = openai.APIConnectionError(request=None)
    rng = random.Random(1)
    delays = [p.delay(a, err, rng) for a in range(1, 8)]
    assert 0.5 <= delays[0] <= 1.0 and all(2.0 <= d <= 4.0 for d in delays[2:])
    assert len(set(delays)) == len(delays)
    assert is_retryable(err)


def test_batch_item_errors_do_not_sink_the_batch(fake):
    srv = fake(["ok"] * 5)
    client = VisionClient(srv.base_url, retry=FAST)
    items = [(Image.new("RGB", (64, 64)), "a"), (b"garbage", "b"), (None, "c")]
    out = client.batch(items, concurrency=2, progress=False)
    assert isinstance(out[0], Result) and isinstance(out[2], Result)
    assert isinstance(out[1], BatchItemError) and out[1].index == 1
    assert "not an image" in out[1].message
    assert srv.requests == 2  # the bad item never reached the server


def test_async_client_retries(fake):
    srv = fake([("status", 503, 0), "ok", "ok"])

    async def go():
        client = AsyncVisionClient(srv.base_url, retry=FAST)
        r = await client.ask(None, "hi")
        pieces = [p async for p in client.stream(None, "hi")]
        return r, pieces

    r, pieces = asyncio.run(go())
    assert r.attempts == 2 and "".join(pieces) == "hello world"
