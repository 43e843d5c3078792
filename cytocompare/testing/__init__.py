"""The conformance kit: scikit-learn's ``check_estimator``, for cytocompare components.

Third-party plugin authors run it on their components::

    from cytocompare.testing import parametrize_with_checks

    @parametrize_with_checks([MyClassifier(epochs=1)])
    def test_conformance(component, check):
        check(component)

or from the shell: ``cytocompare check my-classifier``. Known gaps are declared, not hidden:
``expected_failed_checks={"check_learns_trivial_task": "needs more than one epoch"}``.
"""

from __future__ import annotations

from cytocompare.testing.checks import (
    check_component,
    component_checks,
    parametrize_with_checks,
)
from cytocompare.testing.datasets import make_tiny_features, make_tiny_images

__all__ = [
    "check_component",
    "component_checks",
    "make_tiny_features",
    "make_tiny_images",
    "parametrize_with_checks",
]
