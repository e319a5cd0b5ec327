"""LESS: keep the records whose LoRA gradients point where the target examples' gradients point."""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from dataflywheel.algorithms.subset import budget_size, rank_order
from dataflywheel.io import read_all
from dataflywheel.ops.base import Selection, Selector
from dataflywheel.ops.registry import register
from dataflywheel.ops.select.budget_selectors import BudgetConfig
from dataflywheel.records import prompt_turns, response_text


class LessConfig(BudgetConfig):
    target: str
    """Dataset file of target/validation examples (any readable format) whose gradients the selection follows."""
    target_task_field: str | None = None
    """``meta`` key naming each target example's task: a record scores its best task's mean similarity."""
    model: str = "default"
    """Model role (default: the bundled SmolLM2-135M-Instruct); LESS needs its gradients, so the role must use
    the local ``transformers`` backend. LESS trains LoRA on its own copy: the role's shared model is untouched."""
    rank: int = Field(default=8, ge=1)
    last_layers: int | None = Field(default=8, ge=1)
    """LoRA (and so gradients) on the top N decoder layers only; null = every layer, as in the paper.
    The top 8 of SmolLM2's 30 run 1.7x faster on CPU (docs/benchmarks.md)."""
    warmup_fraction: float = Field(default=0.05, gt=0.0, le=1.0)
    """Share of the pool used to warm up the LoRA weights (LESS: 5%)."""
    warmup_epochs: int = Field(default=4, ge=1)
    """Warm-up epochs over that share, the learning rate decaying linearly to zero (LESS: 4)."""
    checkpoints: int = Field(default=1, ge=1)
    """Take gradient features at the checkpoints of the last N warm-up epochs and sum their scores weighted by
    each epoch's mean learning rate, as LESS does (its setting: N = warmup_epochs). Each checkpoint costs one
    gradient pass over the pool and the target; the default, the last checkpoint only, is the cheapest."""
    lr: float = Field(default=2e-5, gt=0.0)
    dims: int = Field(default=8192, ge=16)
    """Dimension of the random projection."""
    max_length: int = Field(default=256, ge=16)
    batch_size: int | None = Field(default=None, ge=1)
    """Records per backward pass; default 1 on CPU (measured faster there: docs/benchmarks.md), 8 on a GPU."""
    score_name: str = "less"

    @model_validator(mode="after")
    def _checkpoints_within_warm_up(self):
        if self.checkpoints > self.warmup_epochs:
            raise ValueError(f"checkpoints ({self.checkpoints}) cannot exceed warmup_epochs ({self.warmup_epochs}): "
                             "there is one checkpoint per warm-up epoch")
        return self


@register
class LessSelect(Selector):
    """LESS (Xia et al., 2024): LoRA warm-up, Adam-preconditioned per-sample gradients, mean cosine to a target task's gradients; top-k."""

    name = "select.less"
    Config = LessConfig

    def writes_scores(self) -> tuple[str, ...]:
        return (self.config.score_name,)

    def _examples(self, records: list[dict], model) -> list[tuple[str, str]]:
        tokenizer = model.tokenizer
        return [(tokenizer.apply_chat_template(prompt_turns(r), tokenize=False, add_generation_prompt=True),
                 response_text(r)) for r in records]

    def select(self, scan) -> Selection:
        import torch

        from dataflywheel.algorithms.less import add_lora, gradient_features, less_scores, lr_weighted, warm_up

        cfg = self.config
        pool = [r for batch in scan() for r in batch]
        if not pool:
            return Selection()
        targets, unreadable = read_all(cfg.target)
        if not targets:
            raise ValueError(f"select.less: no readable target examples in {cfg.target}"
                             + (f" ({unreadable[0].source}: {unreadable[0].reason})" if unreadable else ""))
        if unreadable:
            self.counters[f"unreadable rows in the target file {cfg.target}"] += len(unreadable)
        backend = self.context.models.trainable(cfg.model)
        torch.manual_seed(self.context.seed)
        model = add_lora(backend.model, cfg.rank, last_layers=cfg.last_layers)
        rng = np.random.default_rng(self.context.seed)
        warm = rng.choice(len(pool), size=max(1, int(round(cfg.warmup_fraction * len(pool)))), replace=False)
        options = dict(max_length=cfg.max_length, seed=self.context.seed)
        batch_size = cfg.batch_size or (8 if torch.cuda.is_available() else 1)
        examples = self._examples(pool, backend)
        target_examples = self._examples(targets, backend)
        tasks = [r["meta"].get(cfg.target_task_field) for r in targets] if cfg.target_task_field else None
        per_checkpoint, rates = [], []

        def at_checkpoint(epoch: int, mean_lr: float, optimizer) -> None:
            if epoch < cfg.warmup_epochs - cfg.checkpoints:
                return
            train = gradient_features(model, backend.tokenizer, examples, optimizer=optimizer, dims=cfg.dims,
                                      batch_size=batch_size, **options)
            target = gradient_features(model, backend.tokenizer, target_examples, dims=cfg.dims,
                                       batch_size=batch_size, **options)
            per_checkpoint.append(less_scores(train, target, tasks))
            rates.append(mean_lr)

        warm_up(model, backend.tokenizer, [examples[i] for i in warm], epochs=cfg.warmup_epochs, lr=cfg.lr,
                batch_size=4, on_epoch=at_checkpoint, **options)
        scores = lr_weighted(per_checkpoint, rates)
        budget = budget_size(len(pool), cfg.count, cfg.fraction)
        order = rank_order(scores.astype(np.float64))
        kept = set(int(i) for i in order[:budget])
        rank = {int(i): r for r, i in enumerate(order)}
        selection = Selection(scores={i: {cfg.score_name: float(s)} for i, s in enumerate(scores)})
        for i in range(len(pool)):
            if i not in kept:
                selection.rejected[i] = (f"not selected by LESS: rank {rank[i] + 1} of {len(pool)} by gradient "
                                         f"similarity to {cfg.target}, outside the budget of {budget}")
        return selection
