"""HTTP client for OpenAI-compatible servers.

One asyncio loop and one keep-alive ``httpx.AsyncClient`` per client and process, an adaptive concurrency
limit (halved on 429s and timeouts, ``Retry-After`` honoured, grown again one request per window), retries
with backoff and jitter. A request that fails for good fails alone (ModelRequestError); a server that
refuses the key, is unreachable, or fails ``max_consecutive_failures`` requests in a row raises a
FatalError subclass that stops the run. Picklable and fork-safe: the loop and connections are per process.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import threading
import time
from concurrent.futures import Future
from typing import Any, Awaitable, Callable, Iterator

import httpx

from dataflywheel.errors import FatalError
from dataflywheel.models.errors import ModelAuthError, ModelRequestError, ModelUnavailableError

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
DOWN_STATUS = {502, 503, 504}  # still failing after every retry: the server (or its proxy) is down
_ORPHANS: list = []  # runtimes inherited from a parent process: never used, never closed, in a child


def resolve_base_url(base_url: str | None) -> str:
    """The endpoint a client will call: the option, else $OPENAI_BASE_URL, else OpenAI's."""
    return (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")


class AdaptiveLimit:
    """AIMD limit on requests in flight (used on the client's loop only).

    An overload (429, timeout) halves the limit once per window of requests (requests started before the
    last cut cannot cut again); each success adds 1/limit, i.e. +1 per window; Retry-After pauses all starts."""

    def __init__(self, initial: int, maximum: int):
        self.maximum = max(1, maximum)
        self.limit = float(min(max(1, initial), self.maximum))
        self.lowest = int(self.limit)
        self.in_flight = 0
        self.epoch = 0
        self.resume_at = 0.0
        self._cond = asyncio.Condition()

    async def acquire(self) -> int:
        async with self._cond:
            while True:
                pause = self.resume_at - time.monotonic()
                if pause <= 0 and self.in_flight < int(self.limit):
                    self.in_flight += 1
                    return self.epoch
                try:
                    await asyncio.wait_for(self._cond.wait(), timeout=pause if pause > 0 else None)
                except asyncio.TimeoutError:
                    pass

    async def release(self, epoch: int, overloaded: bool, retry_after: float | None,
                      success: bool = False) -> tuple[int, float]:
        """Free a slot and adapt; returns (1 if the limit was cut, seconds of pause added)."""
        cut, paused = 0, 0.0
        async with self._cond:
            self.in_flight -= 1
            if overloaded and epoch == self.epoch:
                self.limit = max(1.0, self.limit / 2)
                self.epoch += 1
                cut = 1
                self.lowest = min(self.lowest, int(self.limit))
            elif success:
                self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)
            if retry_after:
                now = time.monotonic()
                until = now + retry_after
                if until > self.resume_at:
                    paused = until - max(self.resume_at, now)
                    self.resume_at = until
            self._cond.notify_all()
        return cut, paused


class _Runtime:
    """The per-process part of a client: event loop thread, connection pool, concurrency limit."""

    def __init__(self, client: "OpenAIClient"):
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(client.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        pool = httpx.Limits(max_connections=client.max_concurrency, max_keepalive_connections=client.max_concurrency)
        self.http = httpx.AsyncClient(headers=headers, timeout=client.timeout, limits=pool)
        self.limit = self.run(self._make_limit(client.concurrency, client.max_concurrency))

    async def _make_limit(self, initial: int, maximum: int) -> AdaptiveLimit:
        return AdaptiveLimit(initial, maximum)

    def submit(self, coroutine: Awaitable) -> Future:
        if not getattr(self, "_thread", None):
            self._thread = threading.Thread(target=self.loop.run_forever, name="dataflywheel-http", daemon=True)
            self._thread.start()
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Awaitable) -> Any:
        return self.submit(coroutine).result()

    def close(self) -> None:
        self.run(self.http.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class FeatureRefused(ModelRequestError):
    """The server rejected an optional request field being probed (the caller falls back without it)."""


class _Batch:
    """Shared by the requests of one call: the first fatal error stops the others from starting."""

    stop: FatalError | None = None


class OpenAIClient:
    """POSTs JSON to ``base_url`` with bounded, adaptive concurrency and retries (see the module doc)."""

    def __init__(self, base_url: str | None = None, *, api_key_env: str = "OPENAI_API_KEY", timeout: float = 120.0,
                 max_retries: int = 5, backoff: float = 0.5, max_backoff: float = 30.0, concurrency: int = 8,
                 max_concurrency: int | None = None, max_consecutive_failures: int = 10,
                 rate_limit_patience: float = 600.0):
        self.base_url = resolve_base_url(base_url)
        self.api_key_env = api_key_env
        self.timeout, self.max_retries, self.backoff, self.max_backoff = timeout, max_retries, backoff, max_backoff
        self.concurrency = max(1, concurrency)
        self.max_concurrency = max(self.concurrency, max_concurrency or 4 * self.concurrency)
        self.max_consecutive_failures = max_consecutive_failures
        self.rate_limit_patience = rate_limit_patience
        self.usage = None  # the owner's Usage: retries, 429s, timeouts, back-offs, concurrency
        self.gate: Callable[[], None] | None = None  # run before each request starts (the budget check)
        self._runtime: _Runtime | None = None
        self._consecutive = 0

    # ---- process-local state -------------------------------------------------------------------

    def _rt(self) -> _Runtime:
        if self._runtime is None or self._runtime.pid != os.getpid():
            if self._runtime is not None:
                _ORPHANS.append(self._runtime)  # a parent's loop and sockets: leave them alone
            self._runtime = _Runtime(self)
        return self._runtime

    def close(self) -> None:
        """Close the connections and stop the loop thread (a later request reopens them)."""
        if self._runtime is not None and self._runtime.pid == os.getpid():
            self._runtime.close()
        self._runtime = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_runtime": None, "_consecutive": 0}

    # ---- one request ---------------------------------------------------------------------------

    def _count(self, **amounts: float) -> None:
        if self.usage is not None:
            self.usage.add(**amounts)

    def _delay(self, attempt: int) -> float:
        return min(self.max_backoff, self.backoff * (2 ** attempt)) * random.uniform(0.5, 1.5)

    def _shown(self, response: httpx.Response) -> str:
        """The server's answer for a message, with the API key masked (some servers echo the key they refuse)."""
        key = os.environ.get(self.api_key_env)
        return response.text.replace(key, "***") if key else response.text

    def _failed(self, message: str) -> Exception:
        """A request failed for good: its own error, or a fatal one once too many failed in a row."""
        self._consecutive += 1
        if self._consecutive >= self.max_consecutive_failures:
            return ModelUnavailableError(
                f"{self._consecutive} requests in a row to {self.base_url} failed (last: {message}): check the "
                "server and its logs, then continue with `flywheel run --resume`")
        return ModelRequestError(message)

    async def request(self, path: str, body: dict, check: Callable[[dict], None] | None = None,
                      batch: _Batch | None = None, probe: str | None = None) -> dict:
        """POST and return the JSON answer; ``check`` raises ValueError on an answer missing its parts.

        ``probe`` names a body field being tried out: a 4xx, or a 5xx naming that field (llama-cpp-python
        answers 500 to a schema it cannot validate), raises FeatureRefused at once, not counted as a failure."""
        rt = self._rt()
        batch = batch or _Batch()
        url = f"{self.base_url}/{path.lstrip('/')}"
        attempt, rate_limited_since, last, down = 0, None, "", False
        while True:
            epoch = await rt.limit.acquire()
            try:  # checked with a slot in hand: nothing starts after a fatal error or a spent budget
                if batch.stop is not None:
                    raise type(batch.stop)(str(batch.stop))
                if attempt == 0 and rate_limited_since is None and self.gate is not None:
                    self.gate()
            except FatalError:
                await rt.limit.release(epoch, False, None)
                raise
            overloaded, retry_after, response = False, None, None
            try:  # the whole request has ``timeout`` seconds (httpx's own limit is per read: a trickle never ends)
                response = await asyncio.wait_for(rt.http.post(url, json=body), self.timeout)
            except (httpx.TimeoutException, asyncio.TimeoutError):
                last, overloaded, down = f"timed out after {self.timeout:g}s", True, False
                self._count(timeouts=1)
            except httpx.TransportError as err:
                last, down = f"connection error: {type(err).__name__}: {err}", True
                self._count(connection_errors=1)
            finally:
                if response is not None and response.status_code == 429:
                    overloaded = True
                    retry_after = _seconds(response.headers.get("retry-after"))
                success = response is not None and response.status_code < 300
                cut, paused = await rt.limit.release(epoch, overloaded, retry_after, success)
                if self.usage is not None:
                    self.usage.add(backoffs=cut, waited_seconds=paused)
                    self.usage.set_gauges(int(rt.limit.limit), rt.limit.lowest)
            if response is not None:
                status = response.status_code
                shown = self._shown(response) if status >= 300 else ""
                if probe and status >= 400 and status not in (401, 403, 429) and \
                        (status < 500 or probe in response.text):
                    raise FeatureRefused(f"{url} refused {probe}: HTTP {status}: {shown[:300]}")
                if status in (401, 403):
                    raise ModelAuthError(
                        f"{url} answered HTTP {status} ({shown[:200]}): set a valid API key in the environment "
                        f"variable {self.api_key_env} (it is {'set' if os.environ.get(self.api_key_env) else 'unset'}), "
                        "then continue with `flywheel run --resume`")
                if status == 404:
                    raise ModelUnavailableError(
                        f"{url} answered HTTP 404 ({shown[:200]}): check base_url and the model name, then "
                        "continue with `flywheel run --resume`")
                if status == 429:
                    self._count(rate_limited=1)
                    rate_limited_since = rate_limited_since or time.monotonic()
                    if time.monotonic() - rate_limited_since > self.rate_limit_patience:
                        raise ModelUnavailableError(
                            f"{url} kept answering HTTP 429 for {self.rate_limit_patience:g}s: lower concurrency or "
                            "raise the server's rate limit, then continue with `flywheel run --resume`")
                    if not retry_after:
                        await asyncio.sleep(self._delay(min(attempt, 6)))
                    self._count(retries=1)
                    continue  # rate limits do not use up max_retries; the limit and Retry-After pace them
                if status in RETRY_STATUS:
                    last, down = f"HTTP {status}: {shown[:200]}", status in DOWN_STATUS
                    self._count(server_errors=1)
                elif status >= 400:
                    raise self._failed(f"{url} answered HTTP {status}: {shown[:500]}")
                else:
                    try:
                        data = response.json()
                        if check:
                            check(data)
                    except ValueError as err:
                        last, down = f"malformed answer: {str(err)[:200]}", False
                        self._count(malformed=1)
                    else:
                        self._consecutive = 0
                        return data
            if attempt >= self.max_retries:
                if down:
                    raise ModelUnavailableError(
                        f"{url} is unreachable after {attempt + 1} attempts ({last}): start the server or fix "
                        "base_url, then continue with `flywheel run --resume`")
                raise self._failed(f"{url} failed after {attempt + 1} attempts; last error: {last}")
            delay = self._delay(attempt)
            attempt += 1
            self._count(retries=1)
            await asyncio.sleep(delay)

    # ---- many requests -------------------------------------------------------------------------

    def each(self, work: Callable[[Any, _Batch], Awaitable], items: list) -> Iterator[tuple[int, Any]]:
        """``(index, result or exception)`` for every item, in the order they finish.

        ``work(item, batch)`` is a coroutine making one or more requests. A fatal error stops the requests
        not yet started; those in flight finish (their answers are paid for) before the iterator ends."""
        if not items:
            return
        rt = self._rt()
        batch = _Batch()
        done: queue.SimpleQueue = queue.SimpleQueue()
        pending = iter(enumerate(items))

        async def worker() -> None:
            for index, item in pending:
                try:
                    value = await work(item, batch)
                except Exception as err:  # noqa: BLE001 - handed to the caller, which raises it
                    value = err
                    if isinstance(err, FatalError) and batch.stop is None:
                        batch.stop = err
                done.put((index, value))

        async def run_all() -> None:
            await asyncio.gather(*(worker() for _ in range(min(len(items), self.max_concurrency))))

        future = rt.submit(run_all())
        try:
            for _ in range(len(items)):
                yield done.get()
        finally:
            if not future.done():
                batch.stop = batch.stop or ModelUnavailableError("the caller stopped waiting for answers")
                future.cancel()

    def post(self, path: str, body: dict, check: Callable[[dict], None] | None = None) -> dict:
        """One request, synchronously."""
        return self._rt().run(self.request(path, body, check))


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After as seconds (HTTP dates are rare from model servers: treated as absent)."""
    if not retry_after:
        return None
    try:
        return min(max(float(retry_after), 0.0), 300.0)
    except ValueError:
        return None
