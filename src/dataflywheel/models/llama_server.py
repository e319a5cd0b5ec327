"""Serve the bundled SmolLM2 GGUF on loopback with llama-cpp-python's OpenAI-compatible server
(``pip install 'dataflywheel[server]'``): a real server for the tests, the benchmarks and trying the openai
backend without an account."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dataflywheel.models.bundled import smollm2_gguf


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def llama_server(log: Path, *, logits_all: bool = False, embedding: bool = False, n_ctx: int = 2048,
                 timeout: float = 120) -> Iterator[str]:
    """Start ``llama_cpp.server`` with the bundled GGUF (model alias 'smollm2'); yield its base URL
    (``http://127.0.0.1:<port>/v1``) once ``/models`` answers; stop it on exit. ``logits_all`` gives prompt
    logprobs (echo scoring) at some cost to generation speed; ``embedding`` serves /embeddings. The server's
    output goes to ``log`` (a file, not a pipe: a full pipe would block the chatty server)."""
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(n_ctx), "--model_alias", "smollm2"]
    command += ["--logits_all", "true"] if logits_all else []
    command += ["--embedding", "true"] if embedding else []
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + timeout
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"llama_cpp.server did not start: {Path(log).read_text(errors='replace')[-2000:]}")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
