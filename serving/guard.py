"""qvl's ASGI middleware for vLLM's API server (`--middleware serving.guard.Guard`).

What vLLM leaves open, closed in front of every route, before vLLM parses anything:
- auth: with an API key set, every route except /health and /metrics needs it (vLLM's own
  --api-key covers only /v1); constant-time comparison;
- drain: once the supervisor marks the server as draining (QVL_DRAIN_FILE exists), new
  requests get 503 + Retry-After at once while in-flight ones finish;
- bounded admission: at most QVL_MAX_INFLIGHT requests per frontend process from arrival to
  the last byte (vLLM's own --max-num-queued-reqs counts only from after image preprocessing,
  so a frontend-bound server would still queue without limit); beyond it, 503 at once;
- Retry-After on every 503/429, vLLM's own included;
- request bodies: size cap, valid JSON, no per-request `mm_processor_kwargs` /
  `media_io_kwargs` (they could raise the pixel or frame limits), `n` capped, and every
  image/video part checked: data URLs must be valid base64 of a real image of the declared
  kind whose header says at most QVL_MAX_IMAGE_PIXELS pixels (decompression bombs and
  30000x30000 images never reach a decoder); remote URLs only for allowed domains and never to
  private, loopback or link-local addresses; no file:// URLs.

Configured by environment variables (the supervisor sets them from ServeSettings), because
vLLM instantiates middleware classes without arguments.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import ipaddress
import json
import os
import socket
from urllib.parse import urlsplit

from qvl_client.retry import ENGINE_DEAD  # the words of vLLM's dead-engine error, kept once

from serving.settings import DEFAULT_MAX_IMAGE_PIXELS

OPEN_PATHS = ("/health", "/metrics")
IMAGE_MIMES = {"image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp"}
CHECKED_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/responses")


class Rejected(Exception):
    def __init__(self, status: int, message: str, code: str = "invalid_request"):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def blocked_address(ip: str) -> bool:
    """True for addresses a server-side fetch must never reach (SSRF)."""
    a = ipaddress.ip_address(ip)
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped:
        a = a.ipv4_mapped
    return (a.is_private or a.is_loopback or a.is_link_local or a.is_multicast
            or a.is_reserved or a.is_unspecified or not a.is_global)


def check_url(url: str, allowed_domains: list[str], resolve=socket.getaddrinfo) -> None:
    """Raise Rejected unless `url` is http(s) to an allowed domain resolving to public IPs."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        raise Rejected(400, "file:// media URLs are not allowed")
    if parts.scheme not in ("http", "https"):
        raise Rejected(400, f"unsupported media URL scheme {parts.scheme!r}")
    host = (parts.hostname or "").lower().rstrip(".")
    if not allowed_domains:
        raise Rejected(400, "remote media URLs are disabled on this server: send the image "
                            "inline as a data URL (qvl_client does), or ask the operator to "
                            "allow its domain")
    if not any(host == d or host.endswith("." + d) for d in allowed_domains):
        raise Rejected(400, f"media URL host {host!r} is not in the allowed domains")
    try:
        infos = resolve(host, parts.port or (443 if parts.scheme == "https" else 80))
    except (socket.gaierror, UnicodeError) as e:
        raise Rejected(400, f"media URL host {host!r} does not resolve: {e}") from e
    for info in infos:
        if blocked_address(info[4][0]):
            raise Rejected(400, f"media URL host {host!r} resolves to a non-public address")


def check_data_url(url: str, kind: str, max_pixels: int) -> None:
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:"):
        raise Rejected(400, "malformed data URL")
    mime = head[5:].split(";")[0].strip().lower()
    if kind == "image" and mime not in IMAGE_MIMES:
        raise Rejected(415, f"unsupported media type {mime!r} for an image (use "
                            f"{', '.join(sorted(IMAGE_MIMES))})", "unsupported_media_type")
    if kind == "video" and not mime.startswith("video/"):
        raise Rejected(415, f"unsupported media type {mime!r} for a video",
                       "unsupported_media_type")
    if ";base64" not in head:
        raise Rejected(400, "data URL must be base64-encoded")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise Rejected(400, f"invalid base64 in the {kind} data URL: {e}") from e
    if kind != "image":
        return
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            w, h = im.size
            fmt = im.format
    except Image.DecompressionBombError as e:  # Pillow's own ceiling, far above ours
        raise Rejected(413, f"image exceeds this server's limit of {max_pixels:,} pixels "
                            f"({e})", "image_too_large") from e
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise Rejected(400, f"the image data is not a readable image ({mime}): {e}") from e
    if w * h > max_pixels:
        raise Rejected(413, f"image of {w}x{h} = {w * h:,} pixels exceeds this server's limit "
                            f"of {max_pixels:,}: resize it (qvl_client's prepare_image does)",
                       "image_too_large")
    if fmt and f"image/{fmt.lower()}".replace("image/mpo", "image/jpeg") not in (
            mime, mime.replace("jpg", "jpeg")):
        raise Rejected(400, f"the data URL says {mime} but the bytes are {fmt}")


class Config:
    def __init__(self, env=os.environ):
        self.api_key = env.get("QVL_API_KEY") or env.get("VLLM_API_KEY") or ""
        self.drain_file = env.get("QVL_DRAIN_FILE", "")
        self.max_body = int(float(env.get("QVL_MAX_BODY_MB", "64")) * 2**20)
        self.max_n = int(env.get("QVL_MAX_N", "4"))
        self.max_image_pixels = int(env.get("QVL_MAX_IMAGE_PIXELS", str(DEFAULT_MAX_IMAGE_PIXELS)))
        self.domains = [d.strip().lower() for d in env.get("QVL_ALLOWED_MEDIA_DOMAINS",
                                                             "").split(",") if d.strip()]
        self.retry_after = env.get("QVL_RETRY_AFTER_S", "2")
        self.max_inflight = int(env.get("QVL_MAX_INFLIGHT", "0"))  # 0: no limit


def check_body(body: dict, cfg: Config) -> None:
    if not isinstance(body, dict):
        raise Rejected(400, "the request body must be a JSON object")
    for key in ("mm_processor_kwargs", "media_io_kwargs"):
        if body.get(key):
            raise Rejected(400, f"per-request {key} is not allowed on this server (the "
                                "operator sets image and video limits)")
    n = body.get("n", 1)
    if not isinstance(n, int) or n < 1 or n > cfg.max_n:
        raise Rejected(400, f"n must be an integer from 1 to {cfg.max_n}")
    for msg in body.get("messages") or []:
        content = msg.get("content") if isinstance(msg, dict) else None
        for part in content if isinstance(content, list) else []:
            if not isinstance(part, dict):
                continue
            for kind in ("image", "video"):
                ref = part.get(f"{kind}_url")
                if ref is None:
                    continue
                url = ref.get("url") if isinstance(ref, dict) else ref
                if not isinstance(url, str):
                    raise Rejected(400, f"{kind}_url must carry a url string")
                if url.startswith("data:"):
                    check_data_url(url, kind, cfg.max_image_pixels)
                else:
                    check_url(url, cfg.domains)


class Guard:
    """Pure ASGI middleware (streams pass through untouched)."""

    def __init__(self, app, config: Config | None = None):
        self.app = app
        self.cfg = config or Config()
        self.inflight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        try:
            if self.cfg.api_key and not path.startswith(OPEN_PATHS):
                self._auth(scope)
            if self.cfg.drain_file and os.path.exists(self.cfg.drain_file) \
                    and not path.startswith(OPEN_PATHS):
                raise Rejected(503, "the server is shutting down; retry on another replica",
                               "draining")
            limited = scope.get("method") == "POST" and path.startswith(CHECKED_PATHS)
            if limited and self.cfg.max_inflight and self.inflight >= self.cfg.max_inflight:
                raise Rejected(503, "the server is at capacity; retry shortly", "overloaded")
            if limited:
                body = await self._read(receive)
                try:
                    parsed = json.loads(body)
                except (ValueError, UnicodeDecodeError) as e:
                    raise Rejected(400, f"malformed JSON: {e}") from e
                check_body(parsed, self.cfg)
                receive = _replay(body, receive)
        except Rejected as r:
            return await self._reject(send, r)
        if not limited:
            return await self.app(scope, receive, self._retry_after(send))
        self.inflight += 1
        try:
            await self.app(scope, receive, self._retry_after(send))
        finally:
            self.inflight -= 1

    def _auth(self, scope) -> None:
        got = dict(scope.get("headers") or []).get(b"authorization", b"")
        want = b"Bearer " + self.cfg.api_key.encode()
        if not hmac.compare_digest(got, want):
            raise Rejected(401, "missing or wrong API key (Authorization: Bearer ...)",
                           "unauthorized")

    async def _read(self, receive) -> bytes:
        chunks, size = [], 0
        while True:
            msg = await receive()
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.cfg.max_body:
                raise Rejected(413, f"request body over {self.cfg.max_body // 2**20} MiB",
                               "body_too_large")
            chunks.append(chunk)
            if not msg.get("more_body"):
                return b"".join(chunks)

    def _retry_after(self, send):
        """Retry-After on 429/503; vLLM's 500 for a dead engine becomes 503 (not served, the
        supervisor is restarting it: retry), decided on the first body chunk."""
        held = []

        def with_retry_after(message, status):
            headers = list(message.get("headers") or [])
            if not any(k.lower() == b"retry-after" for k, _ in headers):
                headers.append((b"retry-after", self.cfg.retry_after.encode()))
            return {**message, "status": status, "headers": headers}

        async def wrapped(message):
            if message["type"] == "http.response.start":
                if message["status"] == 500:
                    held.append(message)
                    return
                if message["status"] in (429, 503):
                    message = with_retry_after(message, message["status"])
            elif held and message["type"] == "http.response.body":
                start = held.pop()
                if any(m.encode() in message.get("body", b"") for m in ENGINE_DEAD):
                    start = with_retry_after(start, 503)
                await send(start)
            await send(message)
        return wrapped

    async def _reject(self, send, r: Rejected) -> None:
        body = json.dumps({"error": {"message": r.message, "type": r.code,
                                     "code": r.status}}).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
        if r.status in (429, 503):
            headers.append((b"retry-after", self.cfg.retry_after.encode()))
        if r.status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": r.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive):
    """The body once, then the client's own channel (its disconnect ends a stream)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay
