"""The component: one CNN class behind both registered names, its parameters, tags and the optional
runner protocols (Checkpointing, WritesArtifacts, ReportsFit)."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from cytocompare.base import clone, get_tags
from cytocompare.protocols import Checkpointing, ReportsFit, Tags, WritesArtifacts
from cytocompare_deep import classifier as C
from cytocompare_deep.augment import BatchAugment
from cytocompare_deep.augment_settings import AugmentSettings

from test_training import blobs, tiny  # the same tiny synthetic set and settings


def _defaults(cls) -> dict:
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}


def test_both_names_are_one_class_with_the_same_defaults_but_the_architecture():
    assert issubclass(C.ResNeXt50Classifier, C.CNNClassifier)
    assert issubclass(C.SequentialCNNClassifier, C.CNNClassifier)
    # the subclasses declare nothing but their architecture (set_*_request: scikit-learn's
    # metadata routing adds those to every estimator subclass by itself)
    for sub in (C.ResNeXt50Classifier, C.SequentialCNNClassifier):
        own = {k for k in vars(sub) if not k.startswith("__") and not k.startswith("set_")}
        assert own == {"default_architecture"} and "__init__" not in vars(sub), own
    assert _defaults(C.ResNeXt50Classifier) == _defaults(C.SequentialCNNClassifier) == _defaults(C.CNNClassifier)
    assert C.ResNeXt50Classifier()._architecture() == "resnext50"
    assert C.SequentialCNNClassifier()._architecture() == "sequential-cnn"
    assert C.CNNClassifier(architecture="sequential-cnn")._architecture() == "sequential-cnn"
    with pytest.raises(ValueError, match="architecture"):
        C.CNNClassifier(architecture="vgg")._architecture()


def test_paper_defaults_per_name():
    d = _defaults(C.CNNClassifier)
    assert (d["epochs"], d["samples_per_class"], d["batch_size"], d["input_size"]) == (13, 25000, 128, 250)
    assert (d["rotation"], d["shift"], d["shear"], d["flips"], d["stain"]) == (180.0, 0.25, 0.2, True, "macenko-hed")
    assert d["width"] == "full" and "image_size" not in d


def test_every_augmentation_setting_is_a_parameter_with_its_default_and_is_forwarded():
    d = _defaults(C.CNNClassifier)
    settings = AugmentSettings()
    for name in AugmentSettings.names():
        assert d[name] == getattr(settings, name), name
    changed = dict(rotation=90.0, shift=0.1, shear=0.05, flips=False, stain="macenko", hed_sigma=0.02,
                   hed_bias=0.003, macenko_sigma1=0.3, macenko_sigma2=0.1, fill=None, p_stain=0.5)
    assert set(changed) == set(AugmentSettings.names())
    aug = C.CNNClassifier(**changed)._make_augment()
    assert isinstance(aug, BatchAugment)
    assert {name: getattr(aug, name) for name in changed} == changed
    assert C.CNNClassifier(augment=False)._make_augment() is None
    with pytest.raises(ValueError, match="p_stain"):
        C.CNNClassifier(p_stain=2.0)._make_augment()


def test_tags_and_optional_protocols():
    for cls in (C.ResNeXt50Classifier, C.SequentialCNNClassifier):
        assert get_tags(cls) == Tags(deterministic=False, requires=("torch",), gpu="optional", distributed=True)
        clf = cls()
        assert isinstance(clf, Checkpointing) and isinstance(clf, WritesArtifacts) and isinstance(clf, ReportsFit)


def test_clone_keeps_every_parameter():
    clf = C.SequentialCNNClassifier(input_size=64, hed_bias=0.02, architecture="resnext50", width="tiny")
    assert clone(clf).get_params() == clf.get_params()


def test_fit_report_is_json_and_says_what_ran():
    images, y = blobs(n_per_class=6)
    clf = tiny(epochs=2).fit(images, y)
    report = clf.fit_report()
    json.dumps(report)
    assert report["architecture"] == "sequential-cnn" and report["width"] is None
    assert report["epochs_completed"] == 2 and report["device"] == "cpu" and report["precision"] == "fp32"
    assert report["input_size"] == 32 and report["data_on_device"] is True and report["compile"] is False
    assert report["world_size"] == 1  # one process (torchrun: tests/test_torchrun.py)
    assert report["parameters"] == clf.n_parameters_ and report["final_loss"] == clf.history_[-1]["loss"]
    res = tiny(C.ResNeXt50Classifier, epochs=1).fit(images, y).fit_report()
    assert res["architecture"] == "resnext50" and res["width"] == "tiny"


def test_sequential_name_trains_the_same_network_as_the_architecture_parameter():
    images, y = blobs(n_per_class=6)
    a = tiny(epochs=1, deterministic=True).fit(images, y)
    b = tiny(C.CNNClassifier, architecture="sequential-cnn", epochs=1, deterministic=True).fit(images, y)
    for k, v in a.model_.state_dict().items():
        assert torch.equal(v, b.model_.state_dict()[k]), k
    np.testing.assert_array_equal(a.predict_proba(images), b.predict_proba(images))


def test_classifier_module_imports_without_torch():
    """The registry reads the constructor's signature: that must not import torch."""
    code = ("import sys; import cytocompare_deep.classifier as c; c.CNNClassifier().get_params();"
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)

