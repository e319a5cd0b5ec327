"""A tiny OpenAI-shaped HTTP server on loopback that misbehaves on demand (429, 500, hang, bad JSON).

Only for fault injection: real servers are tested in test_openai_server.py."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OK_CHAT = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}}],
           "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


class FaultServer:
    """Answers each request with the next scripted behaviour; records what it received."""

    def __init__(self, script: list):
        self.script = list(script)
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body,
                                        "authorization": self.headers.get("Authorization")})
                action = server.script.pop(0) if server.script else "ok"
                if action == "hang":
                    time.sleep(3)
                    return
                status, payload, headers = {
                    "ok": (200, json.dumps(OK_CHAT), {}),
                    "429": (429, '{"error": "slow down"}', {"Retry-After": "0"}),
                    "500": (500, '{"error": "boom"}', {}),
                    "badjson": (200, '{"choices": [', {}),
                    "nochoices": (200, '{"object": "weird"}', {}),
                    "400": (400, '{"error": "unsupported parameter: top_logprobs"}', {}),
                    "nologprobs": (200, json.dumps({"choices": [{"index": 0, "text": "x", "logprobs": None}]}), {}),
                }[action]
                data = payload.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

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
