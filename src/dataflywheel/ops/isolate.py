"""Failures kept to the items that fail: a call over many items that raises is made again item by item.

Model answers already paid come from the call cache on the second pass (operators sample greedily or with a
seed), so only the requests that failed are sent again. A ``FatalError`` (auth, server down, budget) is never
isolated: no item is at fault."""

from __future__ import annotations

from typing import Any, Callable

from dataflywheel.errors import FatalError
from dataflywheel.models.errors import ModelFeatureError
from dataflywheel.ops.base import Rejected


def each_alone_on_failure(call: Callable[[list], list], items: list, *,
                          not_alone: tuple[type[Exception], ...] = ()) -> list[Any]:
    """``call(items)``; if it raises, ``call([item])[0]`` for each item, the exception standing in the result
    of each item that fails alone (a single item is not asked twice: its exception is its result). A
    ``FatalError``, or an exception of a ``not_alone`` type, is raised at once."""
    try:
        results = call(items)
    except (FatalError, *not_alone):
        raise
    except Exception as err:  # noqa: BLE001 - isolate the failing items; each keeps its own exception as its result
        if len(items) == 1:
            return [err]
        results = []
        for item in items:
            try:
                results.append(call([item])[0])
            except (FatalError, *not_alone):
                raise
            except Exception as err:  # noqa: BLE001
                results.append(err)
        return results
    if len(results) != len(items):
        raise RuntimeError(f"returned {len(results)} results for {len(items)} items")
    return results


def each_request_alone(call: Callable[[list], list], items: list) -> list[Any]:
    """``each_alone_on_failure`` for a generator's model requests: a request that fails for good stands in its
    item's result; a backend without a feature the call needs (``ModelFeatureError``, e.g. no prompt logprobs,
    no chat template) fails every item alike, so it is raised at once: the round fails, and a step whose rounds
    all fail stops saying why."""
    return each_alone_on_failure(call, items, not_alone=(ModelFeatureError,))


def request_failed(err: Exception, parents: list[str] | None = None, record: dict | None = None,
                   raw: str = "") -> Rejected:
    """The reject of a proposal whose model request failed for good (after the client's retries)."""
    return Rejected(f"model request failed: {type(err).__name__}: {str(err)[:300]}", raw=raw, record=record,
                    parents=list(parents or []))
