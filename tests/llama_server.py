"""A real OpenAI-compatible server for tests: llama-cpp-python serving the bundled SmolLM2 GGUF on loopback.

A test module makes the fixture with ``server_url = llama_server_fixture()``; each module that does starts its
own server (module scope) and stops it after its last test."""

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from dataflywheel.models.bundled import smollm2_gguf


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def llama_server(log: Path, timeout: float = 120) -> Iterator[str]:
    """Start ``llama_cpp.server`` with the bundled GGUF (alias 'smollm2', logits and embeddings on); yields its
    base URL (``http://127.0.0.1:<port>/v1``) once ``/models`` answers, and stops it on exit."""
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", "2048", "--logits_all", "true", "--model_alias", "smollm2",
               "--embedding", "true"]
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + timeout
    with open(log, "wb") as log_file:  # a file, not a pipe: a full pipe would block the chatty server
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"llama_cpp.server did not start: {log.read_text(errors='replace')[-2000:]}")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def llama_server_fixture():
    """A module-scoped ``server_url`` fixture for a test module: ``server_url = llama_server_fixture()`` (a fixture
    made here rather than imported, so no linter takes the test arguments for redefined imports)."""

    @pytest.fixture(scope="module", name="server_url")
    def server_url(tmp_path_factory):
        pytest.importorskip("llama_cpp.server",
                            reason="needs pip install 'llama-cpp-python[server]' (make test installs it)")
        with llama_server(tmp_path_factory.mktemp("llama_server") / "server.log") as url:
            yield url

    return server_url
