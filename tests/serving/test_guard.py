"""The guard's checks on their own. The address check never opens a connection: name
resolution is replaced by a table (tests touch nothing outside 127.0.0.0/8 and ::1)."""

from __future__ import annotations

import asyncio
import hmac
import json

import pytest

from serving.guard import Config, Guard, Rejected, blocked_address, check_url


@pytest.mark.parametrize("ip", ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1",
                                "169.254.169.254", "::1", "fe80::1", "fc00::5", "0.0.0.0",
                                "::ffff:127.0.0.1", "100.64.0.1", "224.0.0.1"])
def test_internal_addresses_are_blocked(ip):
    assert blocked_address(ip)


@pytest.mark.parametrize("ip", ["8.8.8.8", "151.101.1.69", "2606:4700::1111"])
def test_public_addresses_pass(ip):
    assert not blocked_address(ip)


def table(mapping):
    def resolve(host, port):
        return [(None, None, None, None, (ip, port)) for ip in mapping[host]]
    return resolve


def test_url_policy():
    allowed = ["images.example.com"]
    res = table({"images.example.com": ["93.184.216.34"], "cdn.images.example.com":
                 ["93.184.216.35"], "evil.images.example.com": ["93.184.216.34", "10.0.0.7"]})
    check_url("https://images.example.com/a.png", allowed, res)
    check_url("https://cdn.images.example.com/a.png", allowed, res)  # subdomain
    for url, msg in [("https://evil.images.example.com/a.png", "non-public"),
                     ("https://images.example.com.attacker.net/a.png", "not in the allowed"),
                     ("http://127.0.0.1/a.png", "not in the allowed"),
                     ("file:///etc/passwd", "file://"), ("ftp://images.example.com/a", "scheme")]:
        with pytest.raises(Rejected, match=msg):
            check_url(url, allowed, res)
    with pytest.raises(Rejected, match="disabled"):
        check_url("https://images.example.com/a.png", [], res)


async def _call(guard, path="/v1/models", headers=(), body=b"", method="GET"):
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(m):
        sent.append(m)
    await guard({"type": "http", "path": path, "method": method, "headers": list(headers)},
                receive, send)
    return sent


async def _app_503(scope, receive, send):
    await send({"type": "http.response.start", "status": 503, "headers": []})
    await send({"type": "http.response.body", "body": b"busy"})


def test_auth_is_constant_time_and_open_paths_stay_open(monkeypatch):
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    g = Guard(_app_503, Config({"VLLM_API_KEY": "k1"}))
    sent = asyncio.run(_call(g, headers=[(b"authorization", b"Bearer k2")]))
    assert sent[0]["status"] == 401 and calls
    assert asyncio.run(_call(g, "/health"))[0]["status"] == 503  # reached the app, no key
    ok = asyncio.run(_call(g, headers=[(b"authorization", b"Bearer k1")]))
    assert ok[0]["status"] == 503


def test_retry_after_added_to_the_servers_503():
    g = Guard(_app_503, Config({"QVL_RETRY_AFTER_S": "3"}))
    start = asyncio.run(_call(g))[0]
    assert (b"retry-after", b"3") in start["headers"]


def test_body_checks_run_before_the_app(tmp_path):
    g = Guard(_app_503, Config({"QVL_DRAIN_FILE": str(tmp_path / "drain")}))
    body = json.dumps({"messages": [], "n": 9}).encode()
    sent = asyncio.run(_call(g, "/v1/chat/completions", body=body, method="POST"))
    assert sent[0]["status"] == 400 and b"n must be" in sent[1]["body"]
    (tmp_path / "drain").touch()
    sent = asyncio.run(_call(g, "/v1/models"))
    assert sent[0]["status"] == 503 and b"shutting down" in sent[1]["body"]


async def _app_engine_dead(scope, receive, send):
    await send({"type": "http.response.start", "status": 500, "headers": []})
    await send({"type": "http.response.body",
                "body": b'{"error":{"message":"EngineCore encountered an issue."}}'})


def test_a_dead_engines_500_becomes_a_retryable_503():
    sent = asyncio.run(_call(Guard(_app_engine_dead, Config({}))))
    assert sent[0]["status"] == 503 and any(k == b"retry-after" for k, _ in sent[0]["headers"])
    other = asyncio.run(_call(Guard(_app_503, Config({}))))  # untouched otherwise
    assert other[0]["status"] == 503
