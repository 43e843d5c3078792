"""Input checks shared by the selector and the classifiers (one wording for one mistake)."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_finite(X: np.ndarray, what: str = "X") -> None:
    """Raise ``ValueError`` naming how many entries of ``X`` are NaN or infinite."""
    if X.dtype.kind not in "fc":
        return
    bad = X.size - int(np.count_nonzero(np.isfinite(X)))
    if bad:
        raise ValueError(
            f"{what} contains {bad} non-finite value(s) (NaN or inf) out of {X.size}; "
            "features must be finite (impute or drop those features before this step)"
        )


def check_X(X: Any, n_features: int | None = None, fitted: str = "this component") -> np.ndarray:
    """A 2-D, numeric, finite array with ``n_features`` columns (when given)."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.dtype.kind not in "fciub":
        raise ValueError(f"X must be numeric, got dtype {X.dtype}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features, but {fitted} was fitted on {n_features}")
    check_finite(X)
    return X
