"""cytocompare-classical: the paper's feature-based baseline (Krappe et al.) as a plugin.

Only registration lives here; the components are imported lazily when a protocol uses them.
"""

from cytocompare import hookimpl


@hookimpl
def register_feature_extractors(register):
    register(
        "handcrafted",
        "cytocompare_classical.extractor:HandcraftedFeatures",
        description="Nucleus/cytoplasm segmentation + >6,000 named shape, colour and texture features",
        fast_params={"profile": "quick"},
    )


@hookimpl
def register_feature_selectors(register):
    register(
        "mrmr",
        "cytocompare_classical.mrmr:MRMRSelector",
        description="Minimum-redundancy-maximum-relevance (Peng 2005), MID or MIQ on discretised features",
        fast_params={"k": 5},
    )


@hookimpl
def register_classifiers(register):
    register(
        "svm-rbf",
        "cytocompare_classical.svm:RBFSVM",
        description="Standardised features, RBF SVC, C and gamma chosen by CV on the training part",
        fast_params={"param_grid": None},
    )
    register(
        "svm-nystroem",
        "cytocompare_classical.svm:NystroemSVM",
        description="Nystroem kernel approximation + linear SVM: the RBF SVM at paper scale",
        fast_params={"n_components": 50},
    )
