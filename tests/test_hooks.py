"""One test per hook, through a throwaway plugin (the hooks' contract, end to end)."""

import click
import numpy as np

from cytocompare import BaseComponent, hookimpl, plugins
from cytocompare.protocols import MetricRow


class Ext(BaseComponent):
    def fit(self, images, y=None):
        return self

    def transform(self, images):
        return np.zeros((len(images), 1), np.float32)

    def get_feature_names_out(self):
        return ["zero"]


class Sel(BaseComponent):
    def fit(self, X, y):
        self.support_ = np.arange(X.shape[1])
        return self

    def transform(self, X):
        return X

    def get_support(self, indices=False):
        return self.support_


class Ev(BaseComponent):
    def evaluate(self, y_true, y_pred, context):
        return [MetricRow("n", "", float(len(y_true)))]


class Rep(BaseComponent):
    def report(self, run_dir):
        return []


class AllHooks:
    @hookimpl
    def register_feature_extractors(self, register):
        register("t-ext", Ext)

    @hookimpl
    def register_feature_selectors(self, register):
        register("t-sel", Sel)

    @hookimpl
    def register_classifiers(self, register):
        register("t-clf", "tests.plugins.dummy:MajorityClassifier", fast_params={"strategy": "most_frequent"})

    @hookimpl
    def register_evaluators(self, register):
        register("t-ev", Ev)

    @hookimpl
    def register_reporters(self, register):
        register("t-rep", Rep)

    @hookimpl
    def register_commands(self, cli):
        @cli.command("hello-plugin")
        def hello():
            click.echo("hello from a plugin")


def test_register_hooks_each_kind(isolated_registry):
    reg = isolated_registry(AllHooks())
    assert reg.create("feature_extractor", "t-ext").get_feature_names_out() == ["zero"]
    assert reg.create("feature_selector", "t-sel").fit(np.ones((2, 3)), np.array(["a", "b"])).get_support().tolist() == [0, 1, 2]
    assert reg.get("classifier", "t-clf").fast_params == {"strategy": "most_frequent"}
    assert reg.create("evaluator", "t-ev").evaluate(np.array(["a"]), np.array(["a"]), None)[0].value == 1.0
    assert reg.create("reporter", "t-rep").report(None) == []


def test_register_commands_adds_cli_command():
    from click.testing import CliRunner

    pm = plugins.make_plugin_manager(entry_points=False, extra_plugins=[AllHooks()])
    group = click.Group()
    pm.hook.register_commands(cli=group)
    result = CliRunner().invoke(group, ["hello-plugin"])
    assert result.output.strip() == "hello from a plugin"
