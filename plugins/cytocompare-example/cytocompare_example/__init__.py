"""cytocompare-example: a complete, honest third-party plugin in three short modules.

It registers one feature extractor (colour and intensity statistics) and one image-input
classifier (those statistics + logistic regression). Copy this package to start your own.
"""

from cytocompare import hookimpl


@hookimpl
def register_feature_extractors(register):
    register(
        "colour-stats",
        "cytocompare_example.features:ColourStatistics",  # imported only when used
        description="Colour and intensity statistics of the whole image and of its darkest (nuclear) pixels",
    )


@hookimpl
def register_classifiers(register):
    register(
        "colour-logreg",
        "cytocompare_example.classifier:ColourLogReg",
        description="Colour and intensity statistics with multinomial logistic regression",
        fast_params={"max_iter": 200},
    )
