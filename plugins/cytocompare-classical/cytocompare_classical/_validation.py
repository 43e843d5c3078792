"""Input checks shared by the selector and the classifiers (one wording for one mistake).

scikit-learn's ``validate_data`` does the conversion and the shape, dtype, sparse, complex,
``n_features_in_`` and feature-name checks, with the messages its ``check_estimator`` expects;
the finiteness check is ours because its message counts the bad entries and says what to do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data


def check_finite(X: np.ndarray, what: str = "X") -> None:
    """Raise ``ValueError`` naming how many entries of ``X`` are NaN or infinite."""
    if X.dtype.kind not in "fc":
        return
    # row blocks of ~4M entries: a (10^5, 6000) matrix must not need a 600 MB boolean temporary
    flat = X.reshape(X.shape[0], -1) if X.ndim >= 1 and X.shape[0] else X.reshape(1, -1)
    rows = max(1, (1 << 22) // max(1, flat.shape[1]))
    bad = sum(block.size - int(np.count_nonzero(np.isfinite(block)))
              for block in (flat[start:start + rows] for start in range(0, flat.shape[0], rows)))
    if bad:
        raise ValueError(
            f"{what} contains {bad} non-finite value(s) (NaN or inf) out of {X.size}; "
            "features must be finite (impute or drop those features before this step)"
        )


def validate_features(estimator: Any, X: Any, *, reset: bool) -> np.ndarray:
    """``X`` as a dense, numeric, finite 2-D array; ``reset=True`` (in ``fit``) records
    ``n_features_in_``, ``reset=False`` (after fit) checks it. Float arrays pass unchanged."""
    X = validate_data(estimator, X, reset=reset, dtype="numeric", ensure_all_finite=False)
    check_finite(X)
    return X


def validate_training_data(estimator: Any, X: Any, y: Any, *, classification: bool = True
                           ) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` for ``fit``: ``X`` as in :func:`validate_features`, ``y`` 1-D with one label a row
    (a column vector is accepted with scikit-learn's warning); ``classification`` refuses
    continuous targets ("Unknown label type")."""
    X, y = validate_data(estimator, X, y, reset=True, dtype="numeric", ensure_all_finite=False)
    check_finite(X)
    if classification:
        check_classification_targets(y)
    return X, y
