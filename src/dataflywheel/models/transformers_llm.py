"""Local backend on Hugging Face transformers: batched scoring and generation on CPU or GPU."""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

from dataflywheel.models.bundled import SMOLLM2, resolve_llm_path
from dataflywheel.models.llm import Conversation, GenerationParams, reads_as
from dataflywheel.models.usage import Usage

_LOGIT_CHUNK = 1024  # positions projected to the vocabulary at once (bounds memory)


def _cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


_PADDING = (0.1, 256)
"""A batch may hold this share of padding, or this many padding tokens, whichever is more: padded positions cost
as much as real ones (on 2 CPU cores a batch of six prompts of 212-403 tokens, padded to 403, took 1.27x as long
as the six one by one), while a few padding tokens buy a larger, more efficient batch of short texts."""


def _batches(order: list[int], lengths: list[int], max_tokens: int, max_batch: int) -> Iterator[list[int]]:
    """Group indices (already sorted by length) so each padded batch stays under ``max_tokens`` and wastes at
    most ``_PADDING`` on padding."""
    batch: list[int] = []
    real = 0
    for index in order:
        longest = max([lengths[i] for i in batch] + [lengths[index]])
        padded, filled = longest * (len(batch) + 1), real + lengths[index]
        if batch and (padded > max_tokens or len(batch) >= max_batch
                      or padded - filled > max(_PADDING[0] * filled, _PADDING[1])):
            yield batch
            batch, filled = [], lengths[index]
        batch.append(index)
        real = filled
    if batch:
        yield batch


def merge_adapters(model, adapters: list[str]):
    """``model`` with LoRA adapters from `flywheel train` merged into its weights, in order (each adapter was
    trained on the model with the ones before it merged: Self-Rewarding's M1 -> M2 -> M3)."""
    if adapters:
        from peft import PeftModel

        for adapter in adapters:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model


class TransformersLLM:
    """A causal LM loaded with transformers ('smollm2' = the bundled SmolLM2-135M-Instruct)."""

    def __init__(self, model: str = SMOLLM2, *, dtype: str = "float32", device: str | None = None,
                 max_length: int = 2048, batch_size: int = 16, batch_tokens: int = 8192, threads: int | None = None,
                 adapter: str | list[str] | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        path = resolve_llm_path(model)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cpu":
            torch.set_num_threads(threads or _cpu_threads())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
        adapters = [adapter] if isinstance(adapter, str) else list(adapter or [])
        self.model = merge_adapters(self.model, adapters)
        self.model = self.model.to(self.device).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.name = f"transformers:{model}:{dtype}" + "".join(f":adapter={a}" for a in adapters)
        self.max_length, self.batch_size, self.batch_tokens = max_length, batch_size, batch_tokens
        self.usage = Usage()
        self._label_cache: dict[tuple[str, ...], tuple[list[int], list[str]]] = {}

    # ---- prompts --------------------------------------------------------------------------------

    def format_chat(self, conversation: Conversation, add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(conversation, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # ---- scoring --------------------------------------------------------------------------------

    def _pairs(self, prefixes: list[str], continuations: list[str]) -> list[tuple[list[int], int]]:
        """Token ids of prefix + continuation, truncated to max_length, and where the continuation starts."""
        out = []
        for prefix, continuation in zip(prefixes, continuations, strict=True):
            head, tail = self._encode(prefix), self._encode(continuation)
            tail = tail[: self.max_length - 1]
            head = head[max(0, len(head) - (self.max_length - len(tail))):]
            if not head:  # the first token has no prediction: predict it from BOS/EOS
                head = [self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None
                        else self.tokenizer.eos_token_id]
            out.append((head + tail, len(head)))
        return out

    def _hidden(self, sequences: list[list[int]]):
        """Last hidden states of right-padded sequences (padding after the text never changes the text's states)."""
        torch = self.torch
        width = max(len(seq) for seq in sequences)
        ids = torch.full((len(sequences), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        body = self.model.base_model  # LlamaForCausalLM.model, GPT2LMHeadModel.transformer, ...
        return body(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state

    def _head(self, hidden):
        """Vocabulary logits of hidden states (the model's output embedding, whatever it is called)."""
        return self.model.get_output_embeddings()(hidden)

    def logprobs(self, prefixes: list[str], continuations: list[str]) -> list[list[float]]:
        """Per-token log-probabilities of each continuation (batched by length, right-padded)."""
        torch = self.torch
        pairs = self._pairs(prefixes, continuations)
        lengths = [len(ids) for ids, _ in pairs]
        order = sorted(range(len(pairs)), key=lambda i: lengths[i])
        results: list[list[float]] = [[] for _ in pairs]
        with torch.inference_mode():
            for batch in _batches(order, lengths, self.batch_tokens, self.batch_size):
                hidden = self._hidden([pairs[i][0] for i in batch])
                # position t predicts token t+1: gather only the continuation positions
                rows, cols, targets = [], [], []
                for row, i in enumerate(batch):
                    start = pairs[i][1]
                    rows += [row] * (lengths[i] - start)
                    cols += list(range(start - 1, lengths[i] - 1))
                    targets += pairs[i][0][start:]
                picked = hidden[torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)]
                target = torch.tensor(targets, dtype=torch.long, device=self.device)
                values = []
                for s in range(0, len(targets), _LOGIT_CHUNK):
                    logits = self._head(picked[s:s + _LOGIT_CHUNK]).float()
                    values.append(torch.log_softmax(logits, -1).gather(1, target[s:s + _LOGIT_CHUNK, None])[:, 0])
                flat = torch.cat(values).tolist() if values else []
                offset = 0
                for i in batch:
                    count = lengths[i] - pairs[i][1]
                    results[i] = flat[offset: offset + count]
                    offset += count
                self.usage.count_tokens(prompt=sum(lengths[i] for i in batch))
        return results

    def top_logprobs(self, prefixes: list[str], k: int = 20, labels: Sequence[str] = ()) -> list[dict[str, float]]:
        """The k most likely next tokens after each prefix (batched, left-aligned by true length), plus every
        vocabulary token that reads as one of ``labels`` (tokens of the same text: their summed probability)."""
        torch = self.torch
        encoded = [self._encode(p)[-self.max_length:] or [self.tokenizer.eos_token_id] for p in prefixes]
        lengths = [len(e) for e in encoded]
        order = sorted(range(len(encoded)), key=lambda i: lengths[i])
        label_ids, label_texts = self._label_tokens(tuple(labels))
        results: list[dict[str, float]] = [{} for _ in encoded]
        with torch.inference_mode():
            for batch in _batches(order, lengths, self.batch_tokens, self.batch_size):
                hidden = self._hidden([encoded[i] for i in batch])
                last = hidden[torch.arange(len(batch)), torch.tensor([lengths[i] - 1 for i in batch])]
                logprobs = torch.log_softmax(self._head(last).float(), -1)
                top = torch.topk(logprobs, k, dim=-1)
                gathered = logprobs[:, label_ids].tolist() if label_texts else [[] for _ in batch]
                for row, i in enumerate(batch):
                    tokens = self.tokenizer.convert_ids_to_tokens(top.indices[row].tolist())
                    text = [self.tokenizer.convert_tokens_to_string([t]) for t in tokens]
                    results[i] = {}
                    for token, value in zip(text, top.values[row].tolist()):
                        results[i].setdefault(token, value)
                    by_text: dict[str, list[float]] = {}
                    for token, value in zip(label_texts, gathered[row]):
                        by_text.setdefault(token, []).append(value)
                    for token, values in by_text.items():
                        results[i][token] = torch.logsumexp(torch.tensor(values), 0).item()
                self.usage.count_tokens(prompt=sum(lengths[i] for i in batch))
        return results

    def _label_tokens(self, labels: tuple[str, ...]) -> tuple[list[int], list[str]]:
        """Ids and texts of the vocabulary tokens that read as one of ``labels`` (found once per label set)."""
        if not labels:
            return [], []
        found = self._label_cache.get(labels)
        if found is None:
            vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
            found = ([], [])
            for token_id, token in enumerate(vocab):
                text = self.tokenizer.convert_tokens_to_string([token]) if token is not None else ""
                if reads_as(text, labels) is not None:
                    found[0].append(token_id)
                    found[1].append(text)
            self._label_cache[labels] = found
        return found

    def chat_top_logprobs(self, conversations: list[Conversation], k: int = 20,
                          labels: Sequence[str] = ()) -> list[dict[str, float]]:
        """Top-k first tokens of the assistant reply, plus ``labels`` (see top_logprobs)."""
        return self.top_logprobs([self.format_chat(c) for c in conversations], k, labels)

    # ---- generation -----------------------------------------------------------------------------

    def complete_each(self, prompts: list[str], params: GenerationParams) -> Iterator[tuple[int, Any]]:
        """Raw continuations, ``params.n`` per prompt, yielded batch by batch (left padding, sorted by length)."""
        torch = self.torch
        tokenizer = self.tokenizer
        encoded = [self._encode(p)[-(self.max_length - params.max_tokens):] for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i], dtype=torch.long)
                mask[row, width - len(encoded[i]):] = 1
            sampling = params.temperature > 0
            if params.seed is not None:
                torch.manual_seed(params.seed)
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                    max_new_tokens=params.max_tokens, do_sample=sampling, num_return_sequences=params.n,
                    temperature=params.temperature if sampling else None, top_p=params.top_p if sampling else None,
                    top_k=None, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            new = out[:, width:]
            completion = 0
            for row, i in enumerate(batch):
                texts = []
                for seq in new[row * params.n:(row + 1) * params.n]:
                    tokens = [t for t in seq.tolist() if t != tokenizer.pad_token_id]
                    if tokenizer.eos_token_id in tokens:
                        tokens = tokens[: tokens.index(tokenizer.eos_token_id)]
                    completion += len(tokens)
                    texts.append(_cut_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), params.stop))
                yield i, texts
            self.usage.count_tokens(prompt=sum(len(encoded[i]) for i in batch), completion=completion)

    def chat_each(self, conversations: list[Conversation], params: GenerationParams) -> Iterator[tuple[int, Any]]:
        return self.complete_each([self.format_chat(c) for c in conversations], params)

    def complete(self, prompts: list[str], params: GenerationParams) -> list[list[str]]:
        results: list[list[str]] = [[] for _ in prompts]
        for i, texts in self.complete_each(prompts, params):
            results[i] = texts
        return results

    def chat(self, conversations: list[Conversation], params: GenerationParams) -> list[list[str]]:
        return self.complete([self.format_chat(c) for c in conversations], params)


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    cut = min((text.find(s) for s in stop if s in text), default=-1)
    return text[:cut] if cut >= 0 else text
