"""Built-in evaluators."""

from cytocompare.hookspecs import hookimpl


@hookimpl
def register_evaluators(register):
    register(
        "precision-recall",
        "cytocompare.metrics:PrecisionRecallEvaluator",
        description="Per-class precision and recall, strict and tolerant",
    )
    register(
        "summary",
        "cytocompare.metrics:SummaryEvaluator",
        description="Accuracy, balanced accuracy, macro-F1 and weighted F1, strict and tolerant",
    )
    register(
        "external",
        "cytocompare.metrics:ExternalEvaluator",
        description="Coverage and accuracy of confident calls when some predictions mean 'no call'",
    )
