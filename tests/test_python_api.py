"""The README's Python example runs as written, on a datasets.Dataset, and returns one."""

import os
import re

from tests.conftest import REPO


def readme_python_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs_on_a_dataset(tmp_path):
    import datasets

    (tmp_path / "examples").symlink_to(REPO / "examples")
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(readme_python_example(), "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    result, pool = namespace["result"], namespace["pool"]
    assert isinstance(result.data, datasets.Dataset)
    assert 0 < len(result.data) < len(pool)  # the example data has short answers and planted duplicates
    assert result.run_dir.is_dir() and (result.run_dir / "manifest.json").exists()
    assert result.manifest["totals"]["read"] == len(pool)
    assert result.manifest["totals"]["output"] + result.manifest["totals"]["rejected"] == len(pool)
    row = result.data[0]
    assert row["id"] == result.records[0]["id"] and row["messages"][-1]["role"] == "assistant"


def test_run_on_a_list_returns_records_and_a_second_call_gets_its_own_directory(tmp_path):
    import dataflywheel as fw

    rows = [{"instruction": "Say hi.", "output": "Hi there, friend."},
            {"instruction": "Say hi.", "output": "Hi there, friend."},
            {"prompt": "Count to three.", "completion": "One, two, three."}]
    recipe = {"steps": [{"op": "select.exact_dedup"}]}
    first = fw.run(recipe, rows, output=tmp_path / "a", report=False)
    assert isinstance(first.data, list) and len(first.data) == 2
    assert first.records[0]["meta"]["source"] == "data[0]"
    again = fw.run(recipe, rows, output=tmp_path / "a", resume=True, report=False)
    assert [r["id"] for r in again.records] == [r["id"] for r in first.records]
