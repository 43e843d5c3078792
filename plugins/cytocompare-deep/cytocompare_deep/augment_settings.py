"""The augmentation's settings: the one home of their names, defaults and valid ranges.

:class:`~cytocompare_deep.augment.BatchAugment` is these settings plus the code that applies them,
and the CNN classifier exposes every field as a constructor parameter of the same name (so a
protocol can set each range and probability) and forwards them unchanged. This module does not
import torch: the classifier module must import without it (the registry reads its signature).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

__all__ = ["AugmentSettings", "STAIN_METHODS"]

#: the stain augmentations BatchAugment knows (None: geometry only)
STAIN_METHODS: tuple[str | None, ...] = ("hed", "macenko", "macenko-hed", None)


@dataclass(eq=False)  # compared and hashed by identity, as BatchAugment always was
class AugmentSettings:
    """Per-sample random affine + stain augmentation settings (see :mod:`.augment` for the maths).

    Parameters
    ----------
    rotation : float
        Maximum rotation in degrees; ``theta ~ U(0, rotation)`` (paper: 0-180).
    shift : float
        Maximum shift as a fraction of the image size (paper: 0.25).
    shear : float
        Maximum shear *factor* (paper: "20 %" -> 0.2; see :mod:`.augment` on Keras' degrees).
    flips : bool
        Random horizontal and vertical flips, each with probability 1/2.
    stain : {"hed", "macenko", "macenko-hed", None}
        Stain augmentation after the geometric transform. Default ``"macenko-hed"``, the paper's
        chain: Macenko stain separation, then Tellez' HED perturbation in the image's own stain
        basis (ranges ``hed_sigma`` / ``hed_bias``, probability ``p_stain``; see
        :func:`~cytocompare_deep.stain.macenko_hed_jitter`). ``"hed"``: Tellez' jitter in the fixed
        Ruifrok H&E basis (what the CPU figures in docs/deep.md were measured with);
        ``"macenko"``: Macenko jitter with its own ranges.
    hed_sigma, hed_bias : float
        HED jitter (``"hed"`` and ``"macenko-hed"``): ``alpha ~ U(1 - hed_sigma, 1 + hed_sigma)``,
        ``beta ~ U(-hed_bias, hed_bias)`` in scikit-image (>= 0.19) HED units, i.e. natural-log
        OD / ln(1e6), in which stained MGG pixels reach only about 0.1. ``hed_sigma=0.05`` is
        Tellez' "HED-light" scale as usually quoted (unverified). The bias default is 0.01, not
        the often-quoted 0.05: in these units 0.05 shifts the white background by up to ~0.7 OD
        and turned Matek cells visibly pink / green (checked by eye on the real images); 0.005
        is subtle, 0.02 clearly visible but still realistic.
        The same holds in the chain: with 0.05 the backgrounds of real Matek cells turned yellow
        and a lymphocyte brown, with 0.01 they stay realistic (looked at, 2026-12-01).
    macenko_sigma1, macenko_sigma2 : float
        Macenko jitter: ``alpha ~ U(1 - sigma1, 1 + sigma1)``, ``beta ~ U(-sigma2, sigma2)``
        (torchstain / staintools defaults 0.2, 0.2).
    fill : float or None
        Value for pixels that come from outside the image (1.0 = white background);
        ``None`` replicates the border pixels instead.
    p_stain : float
        Probability that a sample gets the stain jitter (others keep their colours).
    """

    rotation: float = 180.0
    shift: float = 0.25
    shear: float = 0.2
    flips: bool = True
    stain: str | None = "macenko-hed"
    hed_sigma: float = 0.05
    hed_bias: float = 0.01
    macenko_sigma1: float = 0.2
    macenko_sigma2: float = 0.2
    fill: float | None = 1.0
    p_stain: float = 1.0

    def __post_init__(self) -> None:
        if self.stain not in STAIN_METHODS:
            raise ValueError(f"stain must be one of {', '.join(map(repr, STAIN_METHODS))}, not {self.stain!r}")
        for name in ("rotation", "shift", "shear", "hed_sigma", "hed_bias", "macenko_sigma1", "macenko_sigma2"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.p_stain <= 1.0:
            raise ValueError(f"p_stain must be in [0, 1], got {self.p_stain}")
        # plain Python numbers, whatever the protocol's YAML gave (ints, numpy scalars)
        for name in ("rotation", "shift", "shear", "hed_sigma", "hed_bias", "macenko_sigma1", "macenko_sigma2",
                     "p_stain"):
            setattr(self, name, float(getattr(self, name)))
        self.flips = bool(self.flips)
        self.fill = None if self.fill is None else float(self.fill)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The settings' names, in declaration order (= the classifier's parameters that forward here)."""
        return tuple(f.name for f in fields(cls))

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


#: the defaults, for signatures that expose the settings one by one (``rotation=DEFAULTS.rotation``)
DEFAULTS = AugmentSettings()
