"""Typed exceptions. The CLI turns them into one clear message and a non-zero exit code."""

from __future__ import annotations

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError


class CytocompareError(Exception):
    """Base class of every error cytocompare raises on purpose."""


class ProtocolError(CytocompareError):
    """A protocol file is malformed or names something that does not exist."""


class UnknownComponentError(CytocompareError):
    """A component name is not registered; the message lists the valid choices."""


class DuplicateComponentError(CytocompareError):
    """Two plugins registered the same component name; the message names both sources."""


class PluginError(CytocompareError):
    """A plugin could not be loaded or implements an unknown hook."""


class DataError(CytocompareError):
    """An image file or data folder cannot be used; the message names the file and the cause."""


class OutputError(CytocompareError):
    """A folder or file cytocompare must write (the run directory, the feature cache) cannot be
    written; the message names the path and the cause."""


class SplitError(CytocompareError):
    """A split plan cannot be made as asked (e.g. a class smaller than the number of folds)."""


class NotFittedError(CytocompareError, _SklearnNotFittedError):
    """A component was used before ``fit``: scikit-learn's exception of that name (a ValueError and
    an AttributeError), so that ``check_estimator`` and user code catching either see it."""
