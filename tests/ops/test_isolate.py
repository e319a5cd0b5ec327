"""ops.isolate: a failing call over many items is made again item by item; fatal errors are never isolated."""

import pytest

from dataflywheel.models import ModelAuthError, ModelRequestError
from dataflywheel.models.llm import ModelFeatureError
from dataflywheel.ops.isolate import each_alone_on_failure, each_request_alone, request_failed


class Calls:
    """Doubles each number; a batch holding a negative one fails (with ``error``)."""

    def __init__(self, error=ModelRequestError):
        self.batches, self.error = [], error

    def __call__(self, items):
        self.batches.append(list(items))
        if any(i < 0 for i in items):
            raise self.error(f"cannot double {min(items)}")
        return [2 * i for i in items]


def test_only_the_failing_items_keep_their_exception():
    calls = Calls()
    results = each_alone_on_failure(calls, [1, -2, 3])
    assert results[0] == 2 and results[2] == 6
    assert isinstance(results[1], ModelRequestError) and str(results[1]) == "cannot double -2"
    assert calls.batches == [[1, -2, 3], [1], [-2], [3]]
    assert request_failed(results[1], ["p"]).reason == "model request failed: ModelRequestError: cannot double -2"


def test_a_single_item_is_not_asked_twice():
    calls = Calls()
    [result] = each_alone_on_failure(calls, [-1])
    assert isinstance(result, ModelRequestError) and calls.batches == [[-1]]


def test_a_fatal_error_is_raised_not_isolated():
    with pytest.raises(ModelAuthError):
        each_alone_on_failure(Calls(ModelAuthError), [1, -2])


def test_a_missing_backend_feature_fails_a_generators_requests_at_once():
    calls = Calls(ModelFeatureError)
    with pytest.raises(ModelFeatureError):
        each_request_alone(calls, [1, -2, 3])
    assert calls.batches == [[1, -2, 3]]  # no item asked again: every one would fail alike
    assert [type(r) for r in each_request_alone(Calls(), [1, -2])] == [int, ModelRequestError]
    # record by record, as operators apply to batches, it stays each record's error
    assert isinstance(each_alone_on_failure(Calls(ModelFeatureError), [1, -2])[1], ModelFeatureError)
