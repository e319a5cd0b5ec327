"""The table of built-in operator modules agrees with what registers, and asking for one imports only it."""

import subprocess
import sys

from dataflywheel.ops import all_operators
from dataflywheel.ops.catalog import MODULES


def test_every_builtin_operator_is_in_the_table_under_its_module():
    import importlib
    import pkgutil

    import dataflywheel.ops

    for module in pkgutil.walk_packages(dataflywheel.ops.__path__, "dataflywheel.ops."):
        importlib.import_module(module.name)  # an operator module missing from the table registers here too
    builtin = {name: cls.__module__.removeprefix("dataflywheel.ops.") for name, cls in all_operators().items()
               if cls.__module__.startswith("dataflywheel.ops.")}
    assert MODULES == builtin


def test_a_plugin_cannot_take_a_builtin_name():
    code = ("from dataflywheel.ops import Filter, OpConfig, get_operator, register\n"
            "class Mine(Filter):\n    name = 'select.length_filter'\n    Config = OpConfig\n"
            "register(Mine)\nget_operator('select.length_filter')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0 and "registered twice" in done.stderr


def test_asking_for_one_operator_imports_only_its_module():
    """A filter-only run used to import every operator module (a third of a second at each start)."""
    code = ("import sys; from dataflywheel.ops import get_operator; get_operator('select.length_filter'); "
            "print(sorted(m for m in sys.modules if m.startswith('dataflywheel.ops.') and m.count('.') == 3))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "dataflywheel.ops.select.length_filter" in loaded
    assert "dataflywheel.ops.synth.magpie" not in loaded and "dataflywheel.ops.distill.compress" not in loaded
