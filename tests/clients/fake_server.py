"""A scripted stand-in for fault injection only (503s, 429s, dropped sockets). Never used
where a test claims to talk to the real server: those use the `vllm_server` fixture."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeServer:
    """Answers /v1/chat/completions from a script: each entry is one request's fate:
    "ok", ("status", code, retry_after) or "drop_mid_stream"."""

    def __init__(self, script: list):
        self.script = list(script)
        self.requests = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                body = json.dumps({"object": "list", "data": [{"id": "fake", "object": "model",
                                                               "created": 0, "owned_by": "x"}]})
                self._send(200, body.encode(), "application/json")

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                with owner.lock:
                    owner.requests += 1
                    fate = owner.script.pop(0) if owner.script else "ok"
                if isinstance(fate, tuple):
                    _, code, retry_after = fate
                    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
                    self._send(code, json.dumps({"error": {"message": f"status {code}"}}).encode(),
                               "application/json", headers)
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                self._event({"choices": [{"index": 0, "delta": {"content": "hello"}}]})
                if fate == "drop_mid_stream":
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self._event({"choices": [{"index": 0, "delta": {"content": " world"},
                                          "finish_reason": "stop"}]})
                self._event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2,
                                                      "total_tokens": 9}})
                self.wfile.write(b"data: [DONE]\n\n")

            def _event(self, payload):
                base = {"id": "c1", "object": "chat.completion.chunk", "created": 0,
                        "model": "fake"}
                self.wfile.write(f"data: {json.dumps({**base, **payload})}\n\n".encode())

            def _send(self, code, body, ctype, headers=None):
                self.send_response(code)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
