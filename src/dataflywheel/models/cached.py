"""Every model call goes through here: cache lookup per item, the backend only for misses, each answer
stored the moment it arrives, a failed request failing alone, usage counted and the budget checked.

Sampling: greedy answers are cached once and repeated ``n`` times; seeded sampling is cached per seed
(sample ``j`` of seed ``s`` is the answer for seed ``s + j``, so asking for more samples reuses the first);
unseeded sampling is never cached and never merged: identical prompts each get their own samples."""

from __future__ import annotations

import base64
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from dataflywheel.errors import FatalError
from dataflywheel.models.cache import CallCache, cache_key
from dataflywheel.models.llm import Conversation, GenerationParams
from dataflywheel.models.structured import REASK, parse_json
from dataflywheel.models.usage import Budget, Usage

__all__ = ["CachedEmbedder", "CachedLLM", "Usage"]

Pairs = Iterator[tuple[int, Any]]  # (index, answer or exception), in any order


def _first_error(errors: list[Exception]) -> Exception:
    return next((e for e in errors if isinstance(e, FatalError)), errors[0])


class _Lazy:
    """Builds the backend on first use, so a run served wholly from the cache never loads a model.

    Takes a backend, or a (picklable) factory and the cache name its backend will have. ``price`` is
    (prompt, completion) per 1000 tokens; ``budget`` is checked before any call starts; ``tokenizer``
    names a tokenizer that formats and counts without loading weights; ``dry_run`` sends nothing and
    counts what would have been sent (tokens estimated)."""

    def __init__(self, backend_or_factory, cache: CallCache | None, name: str | None = None, *,
                 price: tuple[float, float] | None = None, budget: Budget | None = None,
                 tokenizer: str | None = None, dry_run: bool = False):
        self.cache = cache
        self.budget, self.tokenizer_source, self.dry_run = budget, tokenizer, dry_run
        if callable(backend_or_factory) and name is not None:
            self._factory, self._backend, self.name = backend_or_factory, None, name
            self.usage = Usage()
        else:
            self._factory, self._backend, self.name = None, backend_or_factory, backend_or_factory.name
            self.usage = getattr(backend_or_factory, "usage", None) or Usage()
        self.usage.price, self.usage.budget = price, None if dry_run else budget
        if self._backend is not None:
            self._attach(self._backend)

    def _attach(self, backend) -> None:
        backend.usage = self.usage  # one set of counters, whoever counts
        client = getattr(backend, "client", None)
        if client is not None and self.budget is not None and not self.dry_run:
            client.gate = self.budget.check  # checked again before each HTTP request starts

    @property
    def backend(self):
        if self._backend is None:
            self._backend = self._factory()
            self._attach(self._backend)
        return self._backend

    @property
    def loaded(self) -> bool:
        """Whether the backend (weights, client) has been built in this process."""
        return self._backend is not None

    def close(self) -> None:
        if self._backend is not None and hasattr(self._backend, "close"):
            self._backend.close()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self._factory is not None:
            state["_backend"] = None  # rebuilt lazily where it is unpickled
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    # ---- the one path every call takes ---------------------------------------------------------

    def _run(self, method: str, keys: list[str], payloads: list, compute: Callable[[list], Pairs],
             cacheable: bool = True, merge: bool = True) -> list:
        """Answers for ``payloads``: from the cache by key, the misses from ``compute`` (stored as they arrive).

        Every answer that arrives is kept even when others fail; then the first failure is raised (a fatal
        one first)."""
        use_cache = self.cache is not None and cacheable
        found = self.cache.get_many(list(dict.fromkeys(keys))) if use_cache else {}
        results: list = [None] * len(payloads)
        todo: list = []
        targets: list[list[int]] = []
        slot: dict[str, int] = {}
        for position, (key, payload) in enumerate(zip(keys, payloads)):
            if key in found:
                results[position] = found[key]
            elif merge and key in slot:
                targets[slot[key]].append(position)
            else:
                slot[key] = len(todo)
                todo.append(payload)
                targets.append([position])
        self.usage.add(cache_hits=len(payloads) - len(todo))  # a merged duplicate costs nothing either
        if not todo:
            return results
        if self.budget is not None and not self.dry_run:
            self.budget.check()
        errors: list[Exception] = []
        started = time.perf_counter()
        try:
            for index, value in compute(todo):
                if isinstance(value, Exception):
                    errors.append(value)
                    continue
                if use_cache and not self.dry_run:
                    self.cache.put_many([(keys[targets[index][0]], self.name, method, value)])
                for position in targets[index]:
                    results[position] = value
                self.usage.add(calls=1)
        finally:
            self.usage.add(seconds=time.perf_counter() - started)
        if errors:
            self.usage.add(failures=sum(not isinstance(e, FatalError) for e in errors))
            raise _first_error(errors)
        return results

    def _pairs(self, method: str, *args) -> Callable[[list], Pairs]:
        """``compute`` for _run from a backend method: its streaming ``*_each`` form when it has one."""
        def compute(items: list) -> Pairs:
            each = getattr(self.backend, f"{method}_each", None)
            if each is not None:
                return each(items, *args)
            answers = getattr(self.backend, method)(items, *args)
            if len(answers) != len(items):
                raise RuntimeError(f"{self.name}.{method} returned {len(answers)} results for {len(items)} inputs")
            return iter(enumerate(answers))
        return compute


class CachedLLM(_Lazy):
    """An LLM whose every answer is looked up in (and stored to) the call cache."""

    @property
    def llm(self):
        return self.backend

    # ---- generation ----------------------------------------------------------------------------

    def chat(self, conversations: list[Conversation], params: GenerationParams | None = None) -> list[list[str]]:
        return self._generate("chat", list(conversations), params or GenerationParams())

    def complete(self, prompts: list[str], params: GenerationParams | None = None) -> list[list[str]]:
        return self._generate("complete", list(prompts), params or GenerationParams())

    def _generate(self, method: str, items: list, params: GenerationParams) -> list[list[str]]:
        if params.temperature == 0.0:  # greedy: one answer, cached once, repeated n times
            one = params.model_copy(update={"n": 1, "seed": None})
            keys = [cache_key(self.name, method, item, one.model_dump()) for item in items]
            answers = self._run(method, keys, [(item, one) for item in items], self._sample(method))
            return [list(a[:1]) * params.n for a in answers]
        if params.seed is None:  # unseeded: never cached, never merged
            keys = [str(i) for i in range(len(items))]
            return self._run(method, keys, [(item, params) for item in items], self._sample(method),
                             cacheable=False, merge=False)
        units = [(item, params.model_copy(update={"n": 1, "seed": params.seed + j}))
                 for item in items for j in range(params.n)]
        keys = [cache_key(self.name, method, item, p.model_dump()) for item, p in units]
        answers = self._run(method, keys, units, self._sample(method))
        return [[answers[i * params.n + j][0] for j in range(params.n)] for i in range(len(items))]

    def _sample(self, method: str) -> Callable[[list], Pairs]:
        """``compute`` over (item, params) units: one streaming call per distinct params, in order."""
        def compute(units: list) -> Pairs:
            groups: dict[str, list[int]] = {}
            for index, (_, params) in enumerate(units):
                groups.setdefault(params.model_dump_json(), []).append(index)
            for members in groups.values():
                params = units[members[0]][1]
                items = [units[i][0] for i in members]
                if self.dry_run:
                    pairs = iter(enumerate(self._dry_generate(method, items, params)))
                else:
                    pairs = self._pairs(method, params)(items)
                for index, value in pairs:
                    yield members[index], value
        return compute

    def chat_json(self, conversations: list[Conversation], schema: dict,
                  params: GenerationParams | None = None) -> list[list[Any]]:
        """``params.n`` JSON values per conversation that match ``schema`` (None where none could be had).

        The schema goes to the backend (guided decoding / grammar where it has one); answers are parsed,
        repaired (fences, surrounding prose, trailing commas) and checked; a failure is re-asked once with
        the error. Counted: json_repaired, json_reasked, json_failed."""
        params = (params or GenerationParams()).model_copy(update={"json_schema": schema})
        answers = self.chat(conversations, params)
        values: list[list[Any]] = []
        again: list[tuple[int, int, str]] = []
        for i, choices in enumerate(answers):
            row = []
            for j, text in enumerate(choices):
                value, error, repaired = parse_json(text, schema)
                self.usage.add(json_repaired=int(repaired and error is None))
                row.append(value if error is None else None)
                if error is not None:
                    again.append((i, j, REASK.format(error=error)))
            values.append(row)
        for j in sorted({j for _, j, _ in again}):
            wave = [(i, message) for i, jj, message in again if jj == j]
            retry = params.model_copy(update={"n": 1, "seed": None if params.seed is None else params.seed + j})
            followups = [conversations[i] + [{"role": "assistant", "content": answers[i][j]},
                                             {"role": "user", "content": message}] for i, message in wave]
            self.usage.add(json_reasked=len(wave))
            for (i, _), [text] in zip(wave, self.chat(followups, retry)):
                value, error, _ = parse_json(text, schema)
                values[i][j] = value if error is None else None
                self.usage.add(json_failed=int(error is not None))
        return values

    # ---- scoring -------------------------------------------------------------------------------

    def logprobs(self, prefixes: list[str], continuations: list[str]) -> list[list[float]]:
        pairs = [[p, c] for p, c in zip(prefixes, continuations, strict=True)]
        keys = [cache_key(self.name, "logprobs", pair, None) for pair in pairs]

        def compute(todo: list) -> Pairs:
            if self.dry_run:
                return iter(enumerate(self._dry_score([p + c for p, c in todo], [c for _, c in todo])))
            each = getattr(self.backend, "logprobs_each", None)
            if each is not None:
                return each([p for p, _ in todo], [c for _, c in todo])
            return iter(enumerate(self.backend.logprobs([p for p, _ in todo], [c for _, c in todo])))
        return self._run("logprobs", keys, pairs, compute)

    def top_logprobs(self, prefixes: list[str], k: int = 20, labels: Sequence[str] = ()) -> list[dict[str, float]]:
        params = [k, sorted(labels)] if labels else k
        keys = [cache_key(self.name, "top_logprobs", prefix, params) for prefix in prefixes]
        compute = (lambda todo: iter(enumerate(self._dry_score(todo, None)))) if self.dry_run else \
            self._pairs("top_logprobs", k, tuple(labels))
        return self._run("top_logprobs", keys, list(prefixes), compute)

    def chat_top_logprobs(self, conversations: list[Conversation], k: int = 20,
                          labels: Sequence[str] = ()) -> list[dict[str, float]]:
        params = [k, sorted(labels)] if labels else k
        keys = [cache_key(self.name, "chat_top_logprobs", c, params) for c in conversations]
        compute = (lambda todo: iter(enumerate(self._dry_score([_text(c) for c in todo], None)))) if self.dry_run \
            else self._pairs("chat_top_logprobs", k, tuple(labels))
        return self._run("chat_top_logprobs", keys, list(conversations), compute)

    # ---- prompts and tokens, without loading weights when a tokenizer is named ------------------

    @property
    def tokenizer(self):
        if self._backend is None and self.tokenizer_source is not None:
            from dataflywheel.models.tokenizer import load_tokenizer
            return load_tokenizer(self.tokenizer_source)
        return self.llm.tokenizer

    def format_chat(self, conversation: Conversation, add_generation_prompt: bool = True) -> str:
        if self._backend is None and self.tokenizer_source is not None:
            return self.tokenizer.apply_chat_template(conversation, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)
        return self.llm.format_chat(conversation, add_generation_prompt)

    def __getattr__(self, attribute: str):  # backend extras (model, device) stay reachable
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        return getattr(self.llm, attribute)

    # ---- dry run: count, estimate, send nothing --------------------------------------------------

    def _tokens(self, text: str) -> int:
        if self.tokenizer_source is None:
            return max(1, len(text) // 4)  # ~4 characters a token for English text
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _dry_generate(self, method: str, items: list, params: GenerationParams) -> list[list[str]]:
        width = params.n if params.temperature > 0 else 1
        for item in items:
            if method == "chat":
                item = self.format_chat(item) if self.tokenizer_source is not None else _text(item)
            self.usage.count_tokens(self._tokens(item), params.max_tokens * width)
        return [[""] * params.n for _ in items]

    def _dry_score(self, texts: list[str], continuations: list[str] | None) -> list:
        for text in texts:
            self.usage.count_tokens(self._tokens(text), 0 if continuations is not None else 1)
        if continuations is None:
            return [{} for _ in texts]
        return [[0.0] * self._tokens(c) for c in continuations]


def _text(conversation: Conversation) -> str:
    return "\n".join(str(turn.get("content") or "") for turn in conversation)


class CachedEmbedder(_Lazy):
    """An embedder whose vectors are cached per text."""

    @property
    def embedder(self):
        return self.backend

    def embed(self, texts: list[str]) -> np.ndarray:
        def compute(todo: list[str]) -> Iterable[tuple[int, Any]]:
            each = getattr(self.embedder, "embed_each", None)
            pairs = each(todo) if each is not None else enumerate(np.asarray(self.embedder.embed(todo), np.float32))
            for index, vector in pairs:
                yield index, vector if isinstance(vector, Exception) else \
                    base64.b64encode(np.asarray(vector, np.float32).tobytes()).decode("ascii")

        keys = [cache_key(self.name, "embed", text, None) for text in texts]
        encoded = self._run("embed", keys, list(texts), compute)
        if not encoded:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([np.frombuffer(base64.b64decode(e), dtype=np.float32) for e in encoded])
