"""LESS (Xia et al., 2024): select training data by low-rank gradient similarity to target examples.

1. LoRA warm-up on a small random share of the pool; 2. per-sample LoRA gradients of every pool record,
Adam-preconditioned with the warm-up optimizer's moments; 3. the same (plain gradients) for the target
examples; 4. random projection (a CountSketch, a sparse Johnson-Lindenstrauss map) and normalisation;
5. score = mean cosine similarity to a target task's examples, maximised over tasks. Per-sample
gradients come from one batched backward pass: hooks on the LoRA layers keep their inputs and output
gradients, and each record's weight gradient is their per-record outer product summed over its tokens.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def add_lora(model, rank: int = 8, alpha: int = 16, targets=LORA_TARGETS, last_layers: int | None = None):
    """Wrap ``model`` with LoRA adapters; ``last_layers`` puts them on the top N decoder layers only, so a
    backward pass stops there (most of the cost of per-sample gradients on CPU)."""
    from peft import LoraConfig, get_peft_model

    layers = None
    if last_layers is not None:
        total = model.config.num_hidden_layers
        layers = list(range(max(0, total - last_layers), total))
    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets),
                                            layers_to_transform=layers))


def _encode(tokenizer, examples: list[tuple[str, str]], max_length: int) -> list[tuple[list[int], int]]:
    """Token ids of prompt + answer (answer truncated first) and where the answer starts."""
    out = []
    for prompt, answer in examples:
        head = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        tail = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        tail = tail[: max(1, max_length - 1)]
        head = head[max(0, len(head) - (max_length - len(tail))):] or [tokenizer.eos_token_id]
        out.append((head + tail, len(head)))
    return out


def _batch(encoded, pad_id: int):
    width = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for row, (seq, start) in enumerate(encoded):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        labels[row, start: len(seq)] = torch.tensor(seq[start:])
    return ids, mask, labels


def per_sample_losses(model, ids, mask, labels) -> torch.Tensor:
    """Mean answer-token cross-entropy of each row."""
    device = next(model.parameters()).device
    ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
    answer = (labels != -100).any(dim=0).nonzero()
    first = max(1, int(answer[0])) if len(answer) else 1
    # the vocabulary projection only where some row has an answer token (a fifth of the model's FLOPs)
    keep = torch.arange(first - 1, ids.shape[1] - 1, device=device)
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits.float()
    target = labels[:, first:]
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100, reduction="none")
    counts = (target != -100).sum(dim=1).clamp(min=1)
    return losses.sum(dim=1) / counts


def epoch_batches(n: int, batch_size: int, epochs: int, seed: int = 0) -> list[list[int]]:
    """Mini-batches of positions: one seeded permutation per epoch, so every example is seen once an epoch."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(epochs):
        order = rng.permutation(n)
        batches += [order[start:start + batch_size].tolist() for start in range(0, n, batch_size)]
    return batches


def warm_up(model, tokenizer, examples, *, epochs: int = 1, lr: float = 2e-5, batch_size: int = 4,
            max_length: int = 256, seed: int = 0, min_steps: int = 0,
            on_epoch=None) -> torch.optim.Optimizer:
    """Train the LoRA weights on ``examples``; return the optimizer (its Adam moments precondition LESS).

    Every epoch visits every example once (one permutation per epoch). ``min_steps`` adds epochs until at
    least that many optimizer steps were taken (a few steps leave Adam's moments near their zero start).
    The learning rate decays linearly to zero, as in LESS; ``on_epoch(epoch, mean_lr, optimizer)`` is called
    after each epoch, the model in eval mode (to take gradient features at that checkpoint, weighted by the
    epoch's mean learning rate as the paper does)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    encoded = _encode(tokenizer, examples, max_length)
    per_epoch = -(-len(encoded) // batch_size)
    epochs = max(epochs, -(-min_steps // per_epoch) if per_epoch else epochs)
    total = max(1, per_epoch * epochs)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / total))
    batches = epoch_batches(len(encoded), batch_size, epochs, seed)
    model.train()
    for epoch in range(epochs):
        rates = []
        for rows in batches[epoch * per_epoch:(epoch + 1) * per_epoch]:
            loss = per_sample_losses(model, *_batch([encoded[i] for i in rows], tokenizer.pad_token_id)).mean()
            loss.backward()
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
        if on_epoch is not None:
            model.eval()
            on_epoch(epoch, float(np.mean(rates)) if rates else lr, optimizer)
            model.train()
    model.eval()
    return optimizer


def lr_weighted(scores: list[np.ndarray], rates: list[float]) -> np.ndarray:
    """LESS over several checkpoints: sum_i eta_i * score_i with the epochs' mean learning rates
    renormalised to sum to 1."""
    weights = np.asarray(rates, dtype=np.float64)
    weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(rates), 1 / len(rates))
    return sum(w * np.asarray(s, dtype=np.float64) for w, s in zip(weights, scores))


class _GradientTap:
    """Hooks on every LoRA Linear: per-sample weight gradients from saved inputs and output gradients."""

    def __init__(self, model):
        self.modules = [(name, module) for name, module in model.named_modules()
                        if name.endswith(("lora_A.default", "lora_B.default"))]
        self.inputs: dict[str, torch.Tensor] = {}
        self.grads: dict[str, torch.Tensor] = {}
        self.handles = []
        for name, module in self.modules:
            self.handles.append(module.register_forward_hook(self._keep_input(name)))
            self.handles.append(module.register_full_backward_hook(self._keep_grad(name)))

    def _keep_input(self, name):
        def hook(module, inputs, output):
            self.inputs[name] = inputs[0].detach()
        return hook

    def _keep_grad(self, name):
        def hook(module, grad_input, grad_output):
            self.grads[name] = grad_output[0].detach()
        return hook

    def per_sample(self, name: str) -> torch.Tensor:
        """[batch, out * in] gradients of the module's weight, one row per record."""
        grad = torch.einsum("bto,bti->boi", self.grads[name].float(), self.inputs[name].float())
        return grad.reshape(grad.shape[0], -1)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _sketch_maps(modules, dims: int, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    maps = {}
    for index, (name, module) in enumerate(modules):
        rng = np.random.default_rng([seed, index])
        size = module.weight.numel()
        maps[name] = (torch.from_numpy(rng.integers(0, dims, size=size)),
                      torch.from_numpy(rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=size)))
    return maps


def gradient_features(model, tokenizer, examples, *, optimizer: torch.optim.Optimizer | None = None,
                      dims: int = 8192, batch_size: int = 8, max_length: int = 256, seed: int = 0,
                      progress=None) -> np.ndarray:
    """Projected, L2-normalised per-sample LoRA gradients [len(examples), dims].

    With ``optimizer`` (Adam), each gradient is turned into Adam's update direction from its moments,
    as LESS does for training data; without, plain gradients (LESS's choice for the target examples)."""
    tap = _GradientTap(model)
    device = next(model.parameters()).device
    maps = {name: (buckets.to(device), signs.to(device))
            for name, (buckets, signs) in _sketch_maps(tap.modules, dims, seed).items()}
    params = {name: module.weight for name, module in tap.modules}
    state = {}
    if optimizer is not None:
        for name, weight in params.items():
            moments = optimizer.state.get(weight, {})
            if "exp_avg" in moments:
                state[name] = (moments["exp_avg"].reshape(-1), moments["exp_avg_sq"].reshape(-1))
        beta1, beta2 = optimizer.param_groups[0]["betas"]
        eps = optimizer.param_groups[0]["eps"]
    encoded = _encode(tokenizer, examples, max_length)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    features = np.zeros((len(encoded), dims), dtype=np.float32)
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            model.zero_grad(set_to_none=True)
            losses = per_sample_losses(model, *_batch([encoded[i] for i in rows], tokenizer.pad_token_id))
            with warnings.catch_warnings():
                # the first layer's LoRA inputs need no gradient; the hook still gives the output gradient we use
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                losses.sum().backward()
            sketch = torch.zeros((len(rows), dims), device=device)
            for name, _ in tap.modules:
                grad = tap.per_sample(name)
                if name in state:
                    avg, avg_sq = state[name]
                    grad = (beta1 * avg + (1 - beta1) * grad) / torch.sqrt(beta2 * avg_sq + (1 - beta2) * grad ** 2 + eps)
                buckets, signs = maps[name]
                sketch.index_add_(1, buckets, grad * signs)
            norms = sketch.norm(dim=1, keepdim=True).clamp(min=1e-12)
            features[rows] = (sketch / norms).cpu().numpy()
            if progress is not None:
                progress(len(rows))
    finally:
        tap.close()
        model.zero_grad(set_to_none=True)
    return features


def less_scores(train: np.ndarray, target: np.ndarray, tasks: list | None = None) -> np.ndarray:
    """LESS's score: mean cosine similarity to each target task's examples, maximised over tasks.

    ``tasks`` labels the target rows (one task when absent)."""
    cosine = train @ target.T
    labels = np.asarray(tasks if tasks is not None else [0] * len(target), dtype=object)
    return np.max([cosine[:, labels == task].mean(axis=1) for task in dict.fromkeys(labels.tolist())], axis=0)
