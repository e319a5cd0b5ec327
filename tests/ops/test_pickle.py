"""Every registered operator pickles with its context, so any engine can send it to a worker process."""

import pickle

import pytest

from dataflywheel.models import CallCache, ModelRegistry
from dataflywheel.ops import OpContext, all_operators
from dataflywheel.records import make_record

# Operators whose config has required fields; every other operator must build from its defaults.
REQUIRED = {
    "select.less": {"target": "examples/data/alpaca_eval_sample.jsonl", "count": 2},
    "select.score_range": {"score": "ifd", "max": 1.0},
    "select.top_k": {"scores": {"ifd": 1.0}, "count": 2},
}
REQUIRED["enhance.safety"] = {"method": "lexicon"}  # a filter whose judge would call the unreachable server below
RECORD = make_record([{"role": "user", "content": "Name three colours, please."},
                      {"role": "assistant", "content": "Red, green and blue are three colours."}],
                     scores={"ifd": 0.5})


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    cache = CallCache(tmp_path_factory.mktemp("cache") / "calls.sqlite")
    cache.get_many(["warm"])  # a live SQLite connection in this process
    registry = ModelRegistry({"judge": {"backend": "openai", "model": "m",
                                        "options": {"base_url": "http://127.0.0.1:9/v1"}}}, cache)
    registry.llm("judge")  # a built (lazy) model wrapper
    return OpContext(seed=3, models=registry, quiet=True)


# the package's operators (test doubles registered by test modules collected earlier, some failing on purpose,
# are not the registry a user gets)
@pytest.mark.parametrize("name", sorted(n for n, c in all_operators().items() if not c.__module__.startswith("tests.")))
def test_operator_pickles_with_its_context(name, context):
    cls = all_operators()[name]
    op = cls(cls.Config(**REQUIRED.get(name, {})), context)
    if op.kind == "filter":
        op.reject_reasons([RECORD])  # whatever it opens lazily must not break pickling
    copy = pickle.loads(pickle.dumps(op))
    assert type(copy) is cls and copy.config == op.config and copy.context.seed == 3
    assert copy.context.models.spec("judge").model == "m"
    if op.kind == "filter":
        assert copy.reject_reasons([RECORD]) == op.reject_reasons([RECORD])


def test_model_backed_operators_say_so():
    ops = all_operators()
    assert ops["score.ifd"].uses_models() and ops["select.semantic_dedup"].uses_models()
    assert not ops["select.exact_dedup"].uses_models() and not ops["enhance.normalize"].uses_models()
