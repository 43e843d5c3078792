import subprocess
import sys

import pytest

from cytocompare import hookspecs, plugins
from cytocompare.errors import DuplicateComponentError, PluginError, UnknownComponentError
from tests.plugins.dummy import ClashingPlugin, GoodPlugin, MisspeltHookPlugin


def test_builtin_components_registered_through_hooks(isolated_registry):
    reg = isolated_registry()
    assert {"precision-recall", "summary", "external"} <= set(reg.names("evaluator"))
    assert {"table1", "recall-chart", "confusion-chart", "html"} <= set(reg.names("reporter"))
    assert reg.get("evaluator", "summary").distribution == "cytocompare"


def test_third_party_plugin_registers_component(isolated_registry):
    reg = isolated_registry(GoodPlugin())
    spec = reg.get("classifier", "majority")
    assert spec.description == "most frequent class"
    clf = spec.create(strategy="most_frequent")
    assert type(clf).__name__ == "MajorityClassifier"


def test_duplicate_component_names_both_sources(isolated_registry):
    with pytest.raises(DuplicateComponentError) as exc:
        isolated_registry(GoodPlugin(), ClashingPlugin())
    msg = str(exc.value)
    assert "'majority'" in msg and msg.count("plugin") >= 2
    assert "GoodPlugin" in msg or "ClashingPlugin" in msg


def test_misspelt_hook_is_an_error_naming_the_plugin():
    with pytest.raises(PluginError) as exc:
        plugins.make_plugin_manager(entry_points=False, extra_plugins=[MisspeltHookPlugin()])
    assert "register_clasifiers" in str(exc.value)
    assert "register_classifiers" in str(exc.value)  # the valid hooks are listed


def test_unknown_component_suggests_near_match(isolated_registry):
    reg = isolated_registry(GoodPlugin())
    with pytest.raises(UnknownComponentError, match="did you mean 'majority'"):
        reg.get("classifier", "majorty")


def test_entry_point_plugins_are_found():
    reg = plugins.build_registry(plugins.make_plugin_manager())
    spec = reg.get("classifier", "colour-logreg")
    assert spec.distribution == "cytocompare-example"
    assert spec.version


def test_load_and_disable_plugins_by_environment(monkeypatch):
    monkeypatch.setenv("CYTOCOMPARE_DISABLE_PLUGINS", "example")
    reg = plugins.build_registry(plugins.make_plugin_manager())
    assert ("classifier", "colour-logreg") not in reg
    monkeypatch.delenv("CYTOCOMPARE_DISABLE_PLUGINS")
    monkeypatch.setenv("CYTOCOMPARE_LOAD_PLUGINS", "example")
    reg = plugins.build_registry(plugins.make_plugin_manager())
    assert ("classifier", "colour-logreg") in reg
    assert ("feature_extractor", "handcrafted") not in reg


def test_list_and_import_do_not_import_torch():
    code = (
        "import sys, cytocompare\n"
        "from cytocompare.cli import cli\n"
        "from click.testing import CliRunner\n"
        "r = CliRunner().invoke(cli, ['list'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'resnext50' in r.output, r.output\n"
        "r = CliRunner().invoke(cli, ['plugins'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("hook", [n for n in dir(hookspecs) if n.startswith("register_")])
def test_every_hook_is_documented(hook):
    """datasette's meta-test: each hook appears in docs/hooks.md with its signature."""
    import inspect
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "hooks.md").read_text()
    args = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert f"{hook}({args})" in doc


def _hooks_exercised_by_tests() -> set[str]:
    """Hooks that some test function calls: through ``pm.hook.<name>(...)``, or by handing a plugin
    class that implements the hook (defined under tests/) to the code under test."""
    import ast
    from pathlib import Path

    trees = [ast.parse(p.read_text()) for p in sorted(Path(__file__).parent.rglob("*.py"))
             if p.name != "test_plugins.py"]
    hooks_of_class = {
        node.name: {f.name for f in node.body if isinstance(f, ast.FunctionDef) and f.name.startswith("register_")}
        for tree in trees for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
    }
    exercised: set[str] = set()
    for tree in trees:
        for test in ast.walk(tree):
            if not (isinstance(test, ast.FunctionDef) and test.name.startswith("test_")):
                continue
            for node in ast.walk(test):
                if isinstance(node, ast.Name):
                    exercised |= hooks_of_class.get(node.id, set())
                elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                      and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "hook"):
                    exercised.add(node.func.attr)
    return exercised


@pytest.mark.parametrize("hook", [n for n in dir(hookspecs) if n.startswith("register_")])
def test_every_hook_is_tested(hook):
    """Each hook is exercised by a test function under tests/: one that calls ``pm.hook.<hook>``
    or uses a test plugin class implementing it (a hook only implemented, never used, fails)."""
    assert hook in _hooks_exercised_by_tests()
