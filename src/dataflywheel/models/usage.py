"""The call ledger of one model (calls, cache hits, tokens, cost, retries, concurrency) and a run's budget."""

from __future__ import annotations

import threading

from dataflywheel.models.errors import BudgetExceededError

COUNTERS = ("calls", "cache_hits", "failures", "prompt_tokens", "completion_tokens", "cost", "seconds",
            "retries", "rate_limited", "timeouts", "server_errors", "connection_errors", "malformed", "backoffs",
            "waited_seconds",
            "json_repaired", "json_reasked", "json_failed")
GAUGES = ("concurrency", "concurrency_min")  # current adaptive limit and the lowest it reached (0 = not adaptive)


class Budget:
    """Tokens and/or money a registry may spend (fresh calls only; cache hits are free).

    ``spent_*`` start where a resumed run left off. Shared by every model of one registry in one process."""

    def __init__(self, max_tokens: int | None = None, max_cost: float | None = None, spent_tokens: int = 0,
                 spent_cost: float = 0.0):
        self.max_tokens, self.max_cost = max_tokens, max_cost
        self.spent_tokens, self.spent_cost = spent_tokens, spent_cost
        self._lock = threading.Lock()

    def charge(self, tokens: int, cost: float) -> None:
        with self._lock:
            self.spent_tokens += tokens
            self.spent_cost += cost

    @property
    def exhausted(self) -> bool:
        return ((self.max_tokens is not None and self.spent_tokens >= self.max_tokens)
                or (self.max_cost is not None and self.spent_cost >= self.max_cost))

    def check(self) -> None:
        """Raise BudgetExceededError if no new call may start."""
        if self.exhausted:
            limits = []
            if self.max_tokens is not None:
                limits.append(f"{self.spent_tokens} of {self.max_tokens} tokens")
            if self.max_cost is not None:
                limits.append(f"{self.spent_cost:.4f} of {self.max_cost:g} cost")
            raise BudgetExceededError(f"model budget spent ({', '.join(limits)}): raise max_budget in the recipe "
                                      "and continue with `flywheel run --resume`; answers so far are cached")

    def as_dict(self) -> dict:
        return {"max_tokens": self.max_tokens, "max_cost": self.max_cost, "spent_tokens": self.spent_tokens,
                "spent_cost": round(self.spent_cost, 6)}

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class Usage:
    """Flat numeric counters of one model (the executor records per-step deltas) plus two gauges.

    ``price`` is (prompt, completion) cost per 1000 tokens; ``budget`` is charged for every counted token."""

    def __init__(self, price: tuple[float, float] | None = None, budget: Budget | None = None):
        for name in COUNTERS + GAUGES:
            setattr(self, name, 0.0 if name in ("cost", "seconds", "waited_seconds") else 0)
        self.price, self.budget = price, budget
        self._lock = threading.Lock()

    def add(self, **amounts: float) -> None:
        """Thread-safe increments (HTTP workers count from their own thread)."""
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def count_tokens(self, prompt: int = 0, completion: int = 0) -> None:
        """Tokens a backend really processed: counted, priced, charged to the budget."""
        cost = (prompt * self.price[0] + completion * self.price[1]) / 1000.0 if self.price else 0.0
        self.add(prompt_tokens=prompt, completion_tokens=completion, cost=cost)
        if self.budget is not None:
            self.budget.charge(prompt + completion, cost)

    def set_gauges(self, concurrency: int, concurrency_min: int) -> None:
        self.concurrency, self.concurrency_min = concurrency, concurrency_min

    def as_dict(self) -> dict:
        return {name: (round(getattr(self, name), 6 if name == "cost" else 3) if isinstance(getattr(self, name), float)
                       else getattr(self, name)) for name in COUNTERS + GAUGES}

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
