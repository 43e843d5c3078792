"""cytocompare: classical and deep classifiers of single-cell images, compared under identical conditions.

The core is torch-free; methods come from plugins found through the ``cytocompare`` entry points.
"""

from __future__ import annotations

__version__ = "0.1.0"

from cytocompare.base import BaseComponent, check_is_fitted, clone
from cytocompare.errors import (
    CytocompareError,
    DataError,
    NotFittedError,
    ProtocolError,
    SplitError,
    UnknownComponentError,
)
from cytocompare.hookspecs import hookimpl
from cytocompare.images import ImageSet, read_image

__all__ = [
    "BaseComponent",
    "CytocompareError",
    "DataError",
    "ImageSet",
    "NotFittedError",
    "ProtocolError",
    "SplitError",
    "UnknownComponentError",
    "__version__",
    "check_is_fitted",
    "clone",
    "hookimpl",
    "read_image",
]
