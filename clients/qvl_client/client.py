"""VisionClient / AsyncVisionClient: the OpenAI SDK plus what vision workloads need.

    client = VisionClient(base_url="http://127.0.0.1:8000/v1", api_key="...")
    client.describe("photo.jpg").text
    client.ask(["a.png", "b.png"], "What changed?")
    for piece in client.stream("photo.jpg", "Describe it."): print(piece, end="")
    results = client.batch([("a.jpg", "Caption?"), ("b.jpg", "Caption?")], concurrency=8)

Every call streams under the hood, so every result carries TTFT and total time, and retries
stop the moment the first byte of an answer arrives.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import openai

from qvl_client.batch import BatchItemError, Progress, as_request
from qvl_client.images import DEFAULT_MAX_PIXELS, ImageSource, PreparedImage, prepare_image
from qvl_client.retry import RetryPolicy, StreamBroken, is_retryable

DESCRIBE_PROMPT = "Describe this image."


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Result:
    text: str
    usage: Usage | None
    ttft_s: float | None  # time to the first token of the answer
    total_s: float
    finish_reason: str | None
    model: str
    attempts: int = 1
    images: list[PreparedImage] = field(default_factory=list)


@dataclass
class _Call:
    """One chat request, prepared (images checked and encoded) before anything is sent."""
    messages: list[dict]
    images: list[PreparedImage]
    params: dict


class _Base:
    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 model: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 image_format: str = "JPEG", inline_urls: bool = True, timeout: float = 120.0,
                 retry: RetryPolicy | None = None, default_max_tokens: int = 256,
                 extra_body: dict | None = None):
        self.base_url, self.api_key = base_url, api_key or "EMPTY"
        self.model = model
        self.max_pixels, self.image_format, self.inline_urls = max_pixels, image_format, inline_urls
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.default_max_tokens = default_max_tokens
        self.extra_body = extra_body or {}
        self._rng = random.Random()

    def prepare(self, image: ImageSource | PreparedImage) -> PreparedImage:
        if isinstance(image, PreparedImage):
            return image
        return prepare_image(image, max_pixels=self.max_pixels, fmt=self.image_format,
                             inline_urls=self.inline_urls)

    def user_message(self, images: ImageSource | Sequence[ImageSource] | None,
                     text: str | None) -> tuple[dict, list[PreparedImage]]:
        prepared = [self.prepare(i) for i in _as_list(images)]
        content: list[dict] = [p.content_part() for p in prepared]
        if text:
            content.append({"type": "text", "text": text})
        return {"role": "user", "content": content}, prepared

    def _call(self, messages: list[dict], images: list[PreparedImage], **kw: Any) -> _Call:
        params = {"max_tokens": kw.pop("max_tokens", self.default_max_tokens), **kw}
        extra = {**self.extra_body, **params.pop("extra_body", {})}
        if extra:
            params["extra_body"] = extra
        return _Call(messages, images, params)

    def _backoff(self, col: _Collector, error: Exception, attempt: int,
                 delivering: bool) -> float:
        """Seconds to wait before retrying after `error`; raises when it must not be retried:
        once part of the answer was handed to the caller (`delivering` streams), for a status
        that is the caller's to fix, or when the retries are spent. A call that returns a
        whole Result hands nothing over before the end, so a cut stream is retried like a
        dropped connection (what a non-streaming request would see)."""
        if col.started and delivering:
            if isinstance(error, StreamBroken):
                raise error
            raise StreamBroken(f"connection lost after the answer had started: {error}") from error
        if not is_retryable(error) or attempt > self.retry.max_retries:
            raise error
        return self.retry.delay(attempt, error, self._rng)

    def _request(self, model: str, call: _Call) -> dict:
        return dict(model=model, messages=call.messages, stream=True,
                    stream_options={"include_usage": True}, **call.params)


def _as_list(images) -> list:
    if images is None:
        return []
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


class _Collector:
    """Accumulates a stream into a Result."""

    def __init__(self, model: str, images: list[PreparedImage], t0: float):
        self.model, self.images, self.t0 = model, images, t0
        self.parts: list[str] = []
        self.ttft: float | None = None
        self.usage: Usage | None = None
        self.finish: str | None = None
        self.started = False
        self.attempts = 1

    def add(self, chunk) -> str | None:
        self.started = True
        piece = None
        if chunk.choices:
            ch = chunk.choices[0]
            piece = ch.delta.content or None
            if piece:
                if self.ttft is None:
                    self.ttft = time.perf_counter() - self.t0
                self.parts.append(piece)
            self.finish = ch.finish_reason or self.finish
        if chunk.usage:
            self.usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        return piece

    def check_complete(self) -> None:
        """A stream that ends without a finish reason was cut off (the SDK ends it quietly)."""
        if self.started and self.finish is None:
            raise StreamBroken("the server closed the stream before the answer was complete "
                               f"({len(self.parts)} pieces received)")

    def result(self, attempts: int) -> Result:
        return Result("".join(self.parts), self.usage, self.ttft, time.perf_counter() - self.t0,
                      self.finish, self.model, attempts, self.images)


class VisionClient(_Base):
    """Synchronous client. `openai` is the plain SDK client underneath (retries off: ours)."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, **kw: Any):
        super().__init__(base_url, api_key, **kw)
        self.openai = openai.OpenAI(base_url=base_url, api_key=self.api_key,
                                    timeout=self.timeout, max_retries=0)

    def model_name(self) -> str:
        if not self.model:
            self.model = self.openai.models.list().data[0].id
        return self.model

    def _events(self, call: _Call, delivering: bool) -> Iterator[tuple[str | None, _Collector]]:
        model = self.model_name()
        attempt = 0
        while True:
            attempt += 1
            col = _Collector(model, call.images, time.perf_counter())
            col.attempts = attempt
            try:
                for chunk in self.openai.chat.completions.create(**self._request(model, call)):
                    yield col.add(chunk), col
                col.check_complete()
                return
            except Exception as e:  # noqa: BLE001 - classified by _backoff
                time.sleep(self._backoff(col, e, attempt, delivering))

    def _run(self, call: _Call) -> Result:
        col = None
        for _, col in self._events(call, delivering=False):
            pass
        return col.result(col.attempts)

    def chat(self, messages: list[dict], **kw: Any) -> Result:
        """Send OpenAI-style messages as they are (images already in them)."""
        return self._run(self._call(messages, [], **kw))

    def ask(self, images: ImageSource | Sequence[ImageSource] | None, question: str,
            **kw: Any) -> Result:
        msg, prepared = self.user_message(images, question)
        return self._run(self._call([msg], prepared, **kw))

    def describe(self, image: ImageSource, **kw: Any) -> Result:
        return self.ask(image, DESCRIBE_PROMPT, **kw)

    def stream(self, images: ImageSource | Sequence[ImageSource] | None, question: str,
               **kw: Any) -> Iterator[str]:
        """Yield the answer's text pieces as they arrive."""
        msg, prepared = self.user_message(images, question)  # bad input raises here, first
        for piece, _ in self._events(self._call([msg], prepared, **kw), delivering=True):
            if piece:
                yield piece

    def ask_video(self, video: str, question: str, *, fps: float = 1.0, max_frames: int = 16,
                  as_video: bool = False, **kw: Any) -> Result:
        """Ask about a video file: sampled frames sent as images (default), or the whole file
        as one video part when the server allows video (`as_video=True`)."""
        from qvl_client.video import sample_frames, video_part

        if as_video:
            msg = {"role": "user", "content": [video_part(video),
                                               {"type": "text", "text": question}]}
            return self._run(self._call([msg], [], **kw))
        return self.ask(sample_frames(video, fps, max_frames), question, **kw)

    def conversation(self, system: str | None = None) -> Conversation:
        return Conversation(self, system)

    def batch(self, items: Sequence[Any], *, concurrency: int = 8,
              progress: bool | None = None, **kw: Any) -> list[Result | BatchItemError]:
        """Run many requests with at most `concurrency` in flight; results in input order.
        An item that fails (bad image, server error after retries) becomes a BatchItemError."""
        from concurrent.futures import ThreadPoolExecutor

        bar = Progress(len(items), progress)

        def one(i_item):
            i, item = i_item
            try:
                images, question, item_kw = as_request(item)
                r: Result | BatchItemError = self.ask(images, question, **{**kw, **item_kw})
            except Exception as e:  # noqa: BLE001 - a failed item does not sink the batch
                r = BatchItemError(i, e)
            bar.update(isinstance(r, Result))
            return r

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            out = list(pool.map(one, enumerate(items)))
        bar.close()
        return out


class Conversation:
    """Multi-turn chat that keeps the history, images included."""

    def __init__(self, client: VisionClient, system: str | None = None):
        self.client = client
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []

    def ask(self, question: str, images: ImageSource | Sequence[ImageSource] | None = None,
            **kw: Any) -> Result:
        msg, prepared = self.client.user_message(images, question)
        result = self.client._run(self.client._call([*self.messages, msg], prepared, **kw))
        self.messages += [msg, {"role": "assistant", "content": result.text}]
        return result

    @property
    def turns(self) -> int:
        return sum(1 for m in self.messages if m["role"] == "assistant")


class AsyncVisionClient(_Base):
    """Asynchronous client with the same calls (`await client.ask(...)`)."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, **kw: Any):
        super().__init__(base_url, api_key, **kw)
        self.openai = openai.AsyncOpenAI(base_url=base_url, api_key=self.api_key,
                                         timeout=self.timeout, max_retries=0)

    async def model_name(self) -> str:
        if not self.model:
            self.model = (await self.openai.models.list()).data[0].id
        return self.model

    async def _events(self, call: _Call,
                      delivering: bool) -> AsyncIterator[tuple[str | None, _Collector]]:
        model = await self.model_name()
        attempt = 0
        while True:
            attempt += 1
            col = _Collector(model, call.images, time.perf_counter())
            col.attempts = attempt
            try:
                stream = await self.openai.chat.completions.create(**self._request(model, call))
                async for chunk in stream:
                    yield col.add(chunk), col
                col.check_complete()
                return
            except Exception as e:  # noqa: BLE001 - classified by _backoff
                await asyncio.sleep(self._backoff(col, e, attempt, delivering))

    async def _run(self, call: _Call) -> Result:
        col = None
        async for _, col in self._events(call, delivering=False):
            pass
        return col.result(col.attempts)

    async def ask(self, images, question: str, **kw: Any) -> Result:
        msg, prepared = self.user_message(images, question)
        return await self._run(self._call([msg], prepared, **kw))

    async def describe(self, image: ImageSource, **kw: Any) -> Result:
        return await self.ask(image, DESCRIBE_PROMPT, **kw)

    async def stream(self, images, question: str, **kw: Any) -> AsyncIterator[str]:
        msg, prepared = self.user_message(images, question)
        async for piece, _ in self._events(self._call([msg], prepared, **kw), delivering=True):
            if piece:
                yield piece

    async def batch(self, items: Sequence[Any], *, concurrency: int = 8,
                    progress: bool | None = None, **kw: Any) -> list[Result | BatchItemError]:
        sem = asyncio.Semaphore(max(1, concurrency))
        bar = Progress(len(items), progress)

        async def one(i: int, item: Any) -> Result | BatchItemError:
            async with sem:
                try:
                    images, question, item_kw = as_request(item)
                    r: Result | BatchItemError = await self.ask(images, question,
                                                                **{**kw, **item_kw})
                except Exception as e:  # noqa: BLE001 - a failed item does not sink the batch
                    r = BatchItemError(i, e)
            bar.update(isinstance(r, Result))
            return r

        out = await asyncio.gather(*(one(i, it) for i, it in enumerate(items)))
        bar.close()
        return list(out)
