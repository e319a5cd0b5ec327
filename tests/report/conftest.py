import json

import pytest

from dataflywheel.pipeline import LocalExecutor, parse_recipe
from tests.conftest import EXAMPLE_DATA, write_jsonl

INJECTION = ('<script>window.__pwned = 1</script></script><img src=x onerror="window.__pwned = 2"> '
             '<!-- & "quotes" -->')


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    """A finished run over the example data plus one record carrying script/HTML injection."""
    root = tmp_path_factory.mktemp("report")
    rows = [json.loads(line) for line in EXAMPLE_DATA.read_text().splitlines()]
    rows.append({"instruction": "Repeat this exactly: " + INJECTION, "input": "",
                 "output": "Here it is, repeated exactly as you asked: " + INJECTION, "dataset": "oasst"})
    data = write_jsonl(root / "data.jsonl", rows)
    recipe = parse_recipe({"input": {"path": str(data)}, "output": {"dir": str(root / "run")}, "cache": "off",
                           "steps": [{"op": "enhance.normalize"},
                                     {"op": "select.length_filter", "min_response_words": 5},
                                     {"op": "select.exact_dedup"}]})
    manifest = LocalExecutor(recipe, quiet=True).execute()
    return root / "run", manifest
