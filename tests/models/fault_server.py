"""A tiny OpenAI-shaped HTTP server on loopback that misbehaves on demand (401, 429, 500, hang, bad JSON, ...).

Only for fault injection: real servers are tested in test_openai_server.py. Behaviour per request: ``rule(body)``
if given and not None, else the next entry of ``script``, else "ok"; "<status>:echo-key" answers that status with a
body quoting the request's Authorization header; "drop" closes the connection unanswered, "truncated" sends half
the answer's JSON, "empty" an empty completion, "slow:S" trickles the answer out over S seconds. Keep-alive (HTTP/1.1); it records every
request, the client connection it came on, and the most requests it had in flight at once."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

OK_CHAT = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}}],
           "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


def last_user(body: dict) -> str:
    return body["messages"][-1]["content"] if "messages" in body else body.get("prompt", "")


class FaultServer:
    """Answers each request with a scripted behaviour; ``answer(body)`` gives the reply text of "ok" answers
    (default "fine"); ``server_n``: whether "ok" answers honour ``n``; ``delay``: seconds before answering."""

    def __init__(self, script: list | None = None, *, rule: Callable[[dict], str | None] | None = None,
                 answer: Callable[[dict], str] | None = None, server_n: bool = True, delay: float = 0.0):
        self.script = list(script or [])
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append({"path": self.path, "body": body, "connection": self.client_address[1],
                                            "authorization": self.headers.get("Authorization")})
                    action = (rule(body) if rule else None) or (server.script.pop(0) if server.script else "ok")
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._answer(action, body)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _answer(self, action: str, body: dict) -> None:
                if delay:
                    time.sleep(delay)
                if action == "hang":
                    time.sleep(3)
                    self.close_connection = True
                    return
                if action == "drop":  # the connection closes with no answer at all
                    self.close_connection = True
                    return
                name, _, arg = action.partition(":")
                if arg == "echo-key":  # an error body quoting the Authorization header, as some servers do
                    key = self.headers["Authorization"]
                    quoted = json.dumps({"error": {"message": f"Incorrect API key provided: {key}"}})
                    return self._send(int(name), quoted, {})
                status, payload, headers = {
                    "ok": (200, None, {}),
                    "json": (200, None, {}),
                    "429": (429, '{"error": "slow down"}', {"Retry-After": arg or "0"}),
                    "401": (401, '{"error": "invalid api key"}', {}),
                    "403": (403, '{"error": "forbidden"}', {}),
                    "404": (404, '{"error": "model not found"}', {}),
                    "500": (500, '{"error": "boom"}', {}),
                    "503": (503, '{"error": "down"}', {}),
                    "badjson": (200, '{"choices": [', {}),
                    "nochoices": (200, '{"object": "weird"}', {}),
                    "400": (400, '{"error": "unsupported parameter: top_logprobs"}', {}),
                    "nologprobs": (200, json.dumps({"choices": [{"index": 0, "text": "x", "logprobs": None}]}), {}),
                    "empty": (200, None, {}),
                    "truncated": (200, None, {}),
                    "slow": (200, None, {}),
                }[name]
                if payload is None:
                    text = arg if name == "json" else "" if name == "empty" else (answer(body) if answer else "fine")
                    count = body.get("n", 1) if server_n else 1
                    payload = json.dumps({"choices": [{"index": i, "message": {"role": "assistant", "content": text},
                                                       "text": text} for i in range(count)],
                                          "usage": {"prompt_tokens": 3, "completion_tokens": count}})
                if name == "truncated":  # a complete HTTP answer whose JSON stops half way
                    payload = payload[:len(payload) // 2]
                self._send(status, payload, headers, seconds=float(arg or 1) if name == "slow" else 0.0)

            def _send(self, status: int, payload: str, headers: dict, seconds: float = 0.0) -> None:
                """The answer; with ``seconds``, its body trickles out in 10 pieces over that long."""
                data = payload.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if not seconds:
                    self.wfile.write(data)
                    return
                step = max(1, len(data) // 10 + 1)
                try:
                    for start in range(0, len(data), step):
                        self.wfile.write(data[start:start + step])
                        self.wfile.flush()
                        time.sleep(seconds / 10)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting: its timeout
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FaultServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
