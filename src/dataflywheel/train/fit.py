"""LoRA fine-tuning with TRL: SFT on chat records (loss on the final assistant turn), DPO on preference records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dataflywheel.records import is_preference, is_prompt_only, prompt_turns, repeats, response_text


class TrainConfig(BaseModel):
    """What ``flywheel train`` does; saved beside the adapter."""

    model_config = ConfigDict(extra="forbid")

    model: str = "smollm2"
    """Bundled name or a local Hugging Face model dir."""
    method: Literal["auto", "sft", "dpo"] = "auto"
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run the epochs); equal steps make arms comparable."""
    learning_rate: float = Field(default=2e-4, gt=0)
    batch_size: int = Field(default=4, ge=1)
    max_length: int = Field(default=384, ge=16)
    lora_rank: int = Field(default=8, ge=1)
    lora_alpha: int = 16
    beta: float = 0.1
    """DPO temperature."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory (TRL's default). Off: a small model on a CPU is
    not short of memory, and recomputing costs a forward pass per step (see docs/benchmarks.md, training speed)."""
    base_adapters: list[str] = Field(default_factory=list)
    """LoRA adapters merged into the model, in order, before a new one is trained on it (an earlier iteration's
    model; for DPO it is also the reference)."""
    precompute_ref: bool = False
    """DPO: compute the reference model's log-probabilities once, before training, instead of in every step
    (saves a forward pass per step when each example is seen several times; costs one pass over the data)."""
    seed: int = 0


def sft_rows(records: list[dict]) -> list[dict]:
    """Conversational prompt-completion rows (a record with ``meta.repeat`` k appears k times): the loss falls
    on the final assistant turn only."""
    return [{"prompt": prompt_turns(r), "completion": [{"role": "assistant", "content": response_text(r)}]}
            for r in records if not is_preference(r) for _ in range(repeats(r))]


def dpo_rows(records: list[dict]) -> list[dict]:
    return [{"prompt": r["messages"], "chosen": [r["chosen"]], "rejected": [r["rejected"]]}
            for r in records if is_preference(r) for _ in range(repeats(r))]


def _check_sft(records: list[dict]) -> None:
    """SFT learns every answer it is given: refuse prompts without one and answers labelled undesirable."""
    problems = [("are prompts without an answer", "answer them first or drop them", is_prompt_only),
                ("have an answer labelled undesirable (label false, KTO data)", "drop them, or train pairs with DPO",
                 lambda r: r["meta"].get("label") is False)]
    for what, fix, test in problems:
        found = [r for r in records if test(r)]
        if found:
            first = found[0]["meta"].get("source") or found[0]["id"]
            raise ValueError(f"{len(found)} of {len(records)} records {what} (first: {first}), which SFT would "
                             f"learn from: {fix}")


def train(records: list[dict], output_dir: str | Path, config: TrainConfig, quiet: bool = False,
          callbacks: list | None = None) -> dict:
    """Fine-tune LoRA adapters on ``records``; save adapter, training log and config in ``output_dir``.

    ``quiet``: no progress bars, TRL's and the Hugging Face libraries' included. ``callbacks``: transformers
    ``TrainerCallback``s (e.g. step timing). The result counts the records of the other kind that the method
    does not use (``skipped``)."""
    if quiet:
        from dataflywheel.pipeline.progress import silence_library_bars

        silence_library_bars()
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dataflywheel.algorithms.less import LORA_TARGETS
    from dataflywheel.models.bundled import resolve_llm_path
    from dataflywheel.models.transformers_llm import merge_adapters

    output_dir = Path(output_dir)
    method = config.method
    if method == "auto":
        method = "dpo" if any(is_preference(r) for r in records) else "sft"
    if method == "sft":
        _check_sft(records)
    rows = dpo_rows(records) if method == "dpo" else sft_rows(records)
    if not rows:
        raise ValueError(f"no {method.upper()} records to train on")
    torch.manual_seed(config.seed)
    path = resolve_llm_path(config.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = merge_adapters(AutoModelForCausalLM.from_pretrained(path), config.base_adapters)
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM")
    common = dict(output_dir=str(output_dir), num_train_epochs=config.epochs, max_steps=config.max_steps,
                  learning_rate=config.learning_rate, per_device_train_batch_size=config.batch_size,
                  seed=config.seed, logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=quiet,
                  use_cpu=not torch.cuda.is_available(), gradient_checkpointing=config.gradient_checkpointing,
                  # TRL turns bf16 on by default; a CPU without bf16 units emulates it ~20x slower than fp32
                  bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if method == "sft":
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=Dataset.from_list(rows),
                             peft_config=lora, args=SFTConfig(max_length=config.max_length, **common),
                             callbacks=callbacks)
    else:
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(model=model, processing_class=tokenizer, train_dataset=Dataset.from_list(rows),
                             peft_config=lora, callbacks=callbacks,
                             args=DPOConfig(max_length=config.max_length, beta=config.beta,
                                            precompute_ref_log_probs=config.precompute_ref, **common))
    if quiet:  # without progress bars the Trainer prints every log line instead
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    result = trainer.train()
    trainer.model.save_pretrained(output_dir / "adapter")
    log = trainer.state.log_history
    (output_dir / "training_log.json").write_text(json.dumps(log, indent=1))
    (output_dir / "train_config.json").write_text(json.dumps({**config.model_dump(), "method": method,
                                                              "records": len(rows)}, indent=1))
    return {"method": method, "records": len(rows), "skipped": len(records) - len(rows),
            "steps": trainer.state.global_step, "train_loss": result.training_loss,
            "adapter": str(output_dir / "adapter")}
