"""cytocompare-deep: the paper's CNNs as a plugin.

This module must not import torch: ``cytocompare list`` imports it to read the registrations.
"""

from cytocompare import hookimpl

# Parameters that make a model train in seconds on a CPU (CI and the conformance kit).
TINY = {"epochs": 5, "input_size": 32, "samples_per_class": 32, "batch_size": 16, "device": "cpu", "progress": False}


@hookimpl
def register_classifiers(register):
    register(
        "resnext50",
        "cytocompare_deep.classifier:ResNeXt50Classifier",
        description="torchvision resnext50_32x4d trained from scratch (Matek et al. 2021)",
        fast_params={**TINY, "epochs": 8, "width": "tiny"},
    )
    register(
        "sequential-cnn",
        "cytocompare_deep.classifier:SequentialCNNClassifier",
        description="Small sequential CNN of about 304k parameters (Matek et al. 2021)",
        fast_params={**TINY, "epochs": 12},  # the small CNN needs more (cheap) epochs
    )
