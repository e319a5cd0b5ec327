"""HTTP client for OpenAI-compatible servers: bounded concurrency, retries with backoff and jitter."""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import httpx

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class ModelRequestError(RuntimeError):
    """A request that failed for good (after retries, or with a non-retryable status)."""


class OpenAIClient:
    """POSTs JSON to ``base_url``; retries 429/5xx/timeouts/malformed JSON with exponential backoff."""

    def __init__(self, base_url: str | None = None, *, api_key_env: str = "OPENAI_API_KEY", timeout: float = 120.0,
                 max_retries: int = 5, backoff: float = 0.5, max_backoff: float = 30.0, concurrency: int = 8):
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.timeout, self.max_retries, self.backoff, self.max_backoff = timeout, max_retries, backoff, max_backoff
        self.concurrency = concurrency
        self._local = threading.local()

    def _client(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            headers = {"Content-Type": "application/json"}
            key = os.environ.get(self.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
            client = httpx.Client(headers=headers, timeout=self.timeout)
            self._local.client = client
        return client

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = min(self.max_backoff, self.backoff * (2 ** attempt)) * random.uniform(0.5, 1.5)
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), self.max_backoff))
            except ValueError:
                pass
        time.sleep(delay)

    def post(self, path: str, body: dict, check: Callable[[dict], None] | None = None) -> dict:
        """POST and return the JSON answer; ``check`` raises ValueError on an answer missing its parts."""
        url = f"{self.base_url}/{path.lstrip('/')}"
        last = ""
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                response = self._client().post(url, json=body)
            except httpx.TimeoutException:
                last = f"timed out after {self.timeout:g}s"
            except httpx.TransportError as err:
                last = f"connection error: {type(err).__name__}"
            else:
                if response.status_code in RETRY_STATUS:
                    last = f"HTTP {response.status_code}: {response.text[:200]}"
                    retry_after = response.headers.get("retry-after")
                elif response.status_code >= 400:
                    raise ModelRequestError(f"{url} answered HTTP {response.status_code}: {response.text[:500]}")
                else:
                    try:
                        data = response.json()
                        if check:
                            check(data)
                        return data
                    except ValueError as err:
                        last = f"malformed answer: {str(err)[:200]}"
            if attempt < self.max_retries:
                self._sleep(attempt, retry_after)
        raise ModelRequestError(f"{url} failed after {self.max_retries + 1} attempts; last error: {last}")

    def map(self, function: Callable[[Any], Any], items: list) -> list:
        """``function`` over items with at most ``concurrency`` requests in flight, results in order."""
        if len(items) <= 1 or self.concurrency <= 1:
            return [function(item) for item in items]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(function, items))
