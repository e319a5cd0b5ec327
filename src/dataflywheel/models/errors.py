"""Model-layer errors: a failed request fails its record alone; a failed server or budget stops the run."""

from __future__ import annotations

from dataflywheel.errors import FatalError


class ModelRequestError(RuntimeError):
    """One request failed for good (after retries, or a non-retryable status): only its records fail."""


class ModelFeatureError(RuntimeError):
    """The backend or server cannot do what was asked (e.g. no logprobs); the message says what to use."""


class ModelAuthError(FatalError):
    """The server refused the credentials (HTTP 401/403): every request would fail the same way."""


class ModelUnavailableError(FatalError):
    """The server is down, unknown, or failed too many requests in a row."""


class BudgetExceededError(FatalError):
    """The run's token or money budget is spent; no new call starts."""
