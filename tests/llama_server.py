"""A real OpenAI-compatible server for tests: llama-cpp-python serving the bundled SmolLM2 GGUF on loopback.

A test module makes the fixture with ``server_url = llama_server_fixture()``; each module that does starts its
own server (module scope) and stops it after its last test."""

import pytest

from dataflywheel.models.llama_server import llama_server


def llama_server_fixture():
    """A module-scoped ``server_url`` fixture for a test module: ``server_url = llama_server_fixture()`` (a fixture
    made here rather than imported, so no linter takes the test arguments for redefined imports). The server gives
    prompt logprobs and embeddings."""

    @pytest.fixture(scope="module", name="server_url")
    def server_url(tmp_path_factory):
        pytest.importorskip("llama_cpp.server",
                            reason="needs pip install 'llama-cpp-python[server]' (make test installs it)")
        log = tmp_path_factory.mktemp("llama_server") / "server.log"
        with llama_server(log, logits_all=True, embedding=True) as url:
            yield url

    return server_url
