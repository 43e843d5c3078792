"""Matching an external test set to the training set: pixel scale, then colours.

:func:`match_test_set` builds, from the two loaded sets and the test set's protocol keys
(``test_data.scale``, ``test_data.colour_normalize``), the transforms every test image gets on
decoding, sets them on the test :class:`~cytocompare.images.ImageSet` (so that the feature cache,
the classical and the deep plugin all see the matched images, and ``content_keys`` change with
them), and returns a :class:`TestMatching` that the runner logs and writes to
``test_matching.json``. The training set is never changed. Both steps are dataset-level (one
scale factor, one colour map for every test image) and seeded.

The order matters: the scale first (measured on the test files as they are, against the
training images as the model sees them), then the colour statistics of the test images as the
model will see them (rescaled and cropped).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from cytocompare.images import ImageSet

Log = Callable[[str], None]


@dataclass
class TestMatching:
    """What was done to the external test set (``test_matching.json``)."""

    __test__ = False  # not a pytest test class, despite its name

    #: ``test_data.scale`` as given: None, a fixed factor or ``"red_cells"``
    scale_setting: float | str | None
    #: the factor the test images are rescaled by (None: not rescaled)
    scale_factor: float | None
    center_crop: tuple[int, int] | None
    #: ``red_cells``: the training set's and the test set's measured sizes (RedCellSize)
    train_scale: Any = None
    test_scale: Any = None
    factor_ci95: tuple[float, float] | None = None
    colour_normalize: str = "none"
    colour_map: Any = None
    feature_alignment: str = "none"
    seed: int = 0
    log_lines: list[str] = field(default_factory=list)

    def apply(self, test: ImageSet) -> None:
        """Set the scale and the colour map on the test set (and so on its subsets)."""
        test.scale = self.scale_factor
        test.colour_map = self.colour_map

    def to_dict(self) -> dict[str, Any]:
        scale: dict[str, Any] = {"setting": self.scale_setting, "factor": self.scale_factor,
                                 "before_center_crop": None if self.center_crop is None else list(self.center_crop)}
        if self.train_scale is not None:
            scale |= {"ruler": "red_cells", "training": self.train_scale.to_dict(), "test": self.test_scale.to_dict(),
                      "factor_ci95": None if self.factor_ci95 is None else list(self.factor_ci95)}
        colour: dict[str, Any] = {"method": self.colour_normalize}
        if self.colour_map is not None:
            colour |= {"source": asdict(self.colour_map.source), "target": asdict(self.colour_map.target),
                       "key": self.colour_map.key()}
        return {"seed": self.seed, "scale": scale, "colour": colour, "feature_alignment": self.feature_alignment}


def match_test_set(train: ImageSet, test: ImageSet, spec: Any, *, seed: int, log: Log | None = None) -> TestMatching:
    """The scale and colour transforms of ``test`` (a loaded ``test_data`` set whose protocol keys
    are ``spec``, a :class:`cytocompare.config.DataSpec`) onto ``train``; set on ``test`` on return
    and logged through ``log`` as they are made. Raises :class:`~cytocompare.errors.DataError`
    when ``scale: red_cells`` finds too few red cells in either set."""
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        if log is not None:
            log(line)

    m = TestMatching(spec.scale, None, spec.center_crop, colour_normalize=spec.colour_normalize,
                     feature_alignment=spec.feature_alignment, seed=seed, log_lines=lines)
    if spec.scale == "red_cells":
        _measure_scale(m, train, test, spec, seed, say)
    elif spec.scale is not None:
        m.scale_factor = float(spec.scale)
        say(f"[data] test set rescaled by {m.scale_factor} (test_data.scale) before the centre crop {spec.center_crop}")
    test.scale = m.scale_factor  # the colour statistics below are those of the rescaled images
    if spec.colour_normalize != "none":
        m.colour_map = colour_map(train, test, spec.colour_normalize, seed=seed, log=say)
    m.apply(test)
    return m


def _measure_scale(m: TestMatching, train: ImageSet, test: ImageSet, spec: Any, seed: int, say: Log) -> None:
    from cytocompare.scale import factor_interval, measure_red_cells, scale_factor

    say("[data] measuring the pixel scale of both sets on their red cells (test_data.scale: red_cells)")
    # the training images as the model sees them; the test files as they are (the factor applies to them)
    m.train_scale = measure_red_cells(train, seed=seed, what=f"training set {_where(train)}")
    m.test_scale = measure_red_cells(test.unprocessed(), seed=seed, what=f"test set {_where(test)}")
    m.scale_factor = scale_factor(m.train_scale, m.test_scale)
    m.factor_ci95 = factor_interval(m.train_scale, m.test_scale)
    say(f"[data]   training set: {m.train_scale.describe()}")
    say(f"[data]   test set: {m.test_scale.describe()}")
    say(f"[data] test set rescaled by {m.scale_factor} (test_data.scale: red_cells; 95 % range "
        f"{m.factor_ci95[0]}-{m.factor_ci95[1]}) before the centre crop {spec.center_crop}")


def _where(images: ImageSet) -> str:
    """The folder of a set's first file, for messages."""
    from pathlib import Path

    return str(Path(str(images.paths[0])).parent) if len(images) else "(empty)"


def colour_map(train: ImageSet, test: ImageSet, how: str, *, seed: int, log: Log | None = None) -> Any:
    """Dataset-level Reinhard or Macenko map of the external set onto the training set's colours."""
    from cytocompare.colour import ColourMap, LabStats, StainMap, StainStats

    say = log or (lambda _line: None)
    if how == "macenko":
        src, tgt = StainStats.of(test, seed=seed), StainStats.of(train, seed=seed)
        fmt = lambda s: (f"vectors {[tuple(round(v, 3) for v in row) for row in s.vectors]}, "  # noqa: E731
                         f"99th-percentile amounts {tuple(round(v, 2) for v in s.max_amount)}")
        say(f"[data] test set stain-normalised (dataset-level Macenko, optical density): {fmt(src)} -> {fmt(tgt)}")
        return StainMap(src, tgt)
    if how != "reinhard":
        raise ValueError(f"unknown colour normalisation {how!r}; expected reinhard or macenko")
    source, target = LabStats.of(test, seed=seed), LabStats.of(train, seed=seed)
    say("[data] test set colour-normalised (dataset-level Reinhard, L*a*b*): mean "
        f"{tuple(round(v, 1) for v in source.mean)} -> {tuple(round(v, 1) for v in target.mean)}, sd "
        f"{tuple(round(v, 1) for v in source.std)} -> {tuple(round(v, 1) for v in target.std)}")
    return ColourMap(source, target)
