"""Opt-in stain channels: Giemsa optical densities relative to the image's own background.

Why: RGB, HSV or L*a*b* values depend on the lab's lamp, camera and background tint (Matek bone
marrow: lavender; Acevedo PBC: peach), so another lab's cells fall outside the training range.
Beer-Lambert makes the stain amount the quantity to measure: ``OD = -log((I + 1) / (I0 + 1))``
per RGB channel, with ``I0`` the image's own background colour, does not change when the lamp or
the tint multiplies a channel's intensities; the OD is unmixed into two stains with
scikit-image's ``separate_stains``.

Choices, each measured on real Matek and PBC cells (``DOCS`` below, i.e. docs/features.md
"Stain channels"; ``benchmarks/stain_shift.py --compare`` reproduces them):

* the Giemsa matrix ``bex_from_rgb`` (Methyl Blue + Eosin), not rgb2hed's H&E one (already behind
  the default ``hed_h``/``hed_e``): it leaves less of the cells' OD unexplained and separates
  eosinophil granules better on the training lab;
* no per-cell stain-strength normalisation: every reference tried (nucleus median, cell or image
  99th percentile) made the two labs less alike, so the channels keep absolute amounts.

Opt-in (no profile uses them: the default columns and their feature-cache key are unchanged):
list them in a family's ``channels`` setting, or pass ``stain_feature_settings()`` as the
extractor's ``feature_settings``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from skimage import color

#: the opt-in stain channels (name -> definition, for the docs), in computation order
STAIN_CHANNELS: dict[str, str] = {
    "methylblue_od": (
        "optical density of the basic (azure / methylene-blue) Giemsa component: "
        "`OD = -log((I + 1) / (I0 + 1))` with `I0` the image's background colour, unmixed with skimage "
        "`separate_stains(bex_from_rgb)` (Methyl Blue vector); [0, 3] OD mapped to [0, 1]; opt-in"),
    "eosin_od": "optical density of the eosin Giemsa component, as `methylblue_od`; opt-in",
}

#: OD mapped to 1 (values above are clipped): <0.3 % of the cells' pixels of Matek and PBC exceed it
OD_MAX: float = 3.0

#: the background is the median colour of the brightest (by luminance) pixels outside the cell,
#: this fraction of them: the gaps between crowded marrow cells are still found, and specks
#: brighter than the background (a few pixels) cannot dominate a median
BACKGROUND_FRACTION: float = 0.05

#: fewer background pixels than this (a cell filling the image): fall back to white, I0 = 255
_MIN_BACKGROUND_PIXELS = 50

_BEX = color.bex_from_rgb
# separate_stains divides log(I) by log(1e-6) (DIPlib's compensation); this undoes it, so the
# result is in OD units
_OD_SCALE = -np.log(1e-6)
_GREY = np.array([0.2125, 0.7154, 0.0721])


def background_rgb(rgb: np.ndarray, cell: np.ndarray | None = None) -> np.ndarray:
    """The image's background colour ``I0`` (3 floats, 0-255): the per-channel median of the
    brightest ``BACKGROUND_FRACTION`` of the pixels outside ``cell`` (all pixels without a mask);
    white (255) when fewer than ``_MIN_BACKGROUND_PIXELS`` pixels lie outside it."""
    px = np.asarray(rgb)[~cell] if cell is not None else np.asarray(rgb).reshape(-1, 3)
    if len(px) < _MIN_BACKGROUND_PIXELS:
        return np.full(3, 255.0)
    lum = px @ _GREY
    k = max(int(len(px) * BACKGROUND_FRACTION), _MIN_BACKGROUND_PIXELS)
    brightest = np.argpartition(lum, len(px) - k)[len(px) - k:]
    return np.median(px[brightest].astype(np.float64), axis=0)


def stain_od(rgb: np.ndarray, background: Sequence[float] | np.ndarray = (255.0, 255.0, 255.0)) -> np.ndarray:
    """(H, W, 2) float64 optical densities (methyl blue, eosin) of an (H, W, 3) uint8 image.

    ``OD = -log((I + 1) / (I0 + 1))`` per channel, unmixed by ``separate_stains`` with the
    Giemsa matrix; pixels brighter than the background and negative amounts give 0.
    """
    I0 = np.asarray(background, dtype=np.float64)
    if I0.shape != (3,) or not np.all(np.isfinite(I0)) or np.any(I0 < 0) or np.any(I0 > 255):
        raise ValueError(f"background must be three values in [0, 255], got {background!r}")
    ratio = (np.asarray(rgb, dtype=np.float64) + 1.0) / (I0 + 1.0)
    # separate_stains clips to 1e-6 from below only: ratios > 1 (brighter than I0) give a
    # negative OD, which its final max(., 0) turns into "no stain"
    return color.separate_stains(ratio, _BEX)[..., :2] * _OD_SCALE


def stain_channels(crop: np.ndarray, names: Sequence[str], background: np.ndarray) -> dict[str, np.ndarray]:
    """The requested stain channels of a crop as float32 arrays in [0, 1] (OD / ``OD_MAX``),
    with the background colour of the whole image (:func:`background_rgb`)."""
    unknown = [n for n in names if n not in STAIN_CHANNELS]
    if unknown:  # a programming error: the families' settings are checked before this
        raise KeyError(f"not stain channels: {unknown}; stain channels are {list(STAIN_CHANNELS)}")
    if not names:
        return {}
    od = stain_od(crop, background)
    scaled = np.clip(od / OD_MAX, 0.0, 1.0).astype(np.float32)
    index = {name: i for i, name in enumerate(STAIN_CHANNELS)}
    return {n: np.ascontiguousarray(scaled[..., index[n]]) for n in names}


def stain_feature_settings(profile: str = "full", families: Sequence[str] | None = None,
                           channels: Sequence[str] = tuple(STAIN_CHANNELS)) -> dict[str, dict[str, Any]]:
    """``feature_settings`` adding ``channels`` to the ``channels`` setting of ``families`` (every
    family with such a setting and at least one channel in ``profile``, by default), e.g.
    ``HandcraftedFeatures(feature_settings=stain_feature_settings(families=["intensity"]))``."""
    from cytocompare_classical.features import feature_set

    fs = feature_set(profile)
    with_channels = [f.name for f in fs.families if "channels" in type(f).settings_spec]
    chosen = list(families) if families is not None else [n for n in with_channels if fs.family(n).settings.channels]
    bad = [n for n in chosen if n not in with_channels]
    if bad:
        raise ValueError(f"famil{'y' if len(bad) == 1 else 'ies'} {bad} take no 'channels' setting; "
                         f"those that do: {with_channels}")
    return {n: {"channels": [*fs.family(n).settings.channels, *channels]} for n in chosen}


#: the "Stain channels" section of docs/features.md (figures: benchmarks/stain_shift.py)
DOCS = """\
## Stain channels (opt-in)

`methylblue_od` and `eosin_od` are the amounts of the two Giemsa components, so that a profile
depends less on the lab's lamp, camera and background tint (`features/stain.py`). No profile uses
them: the default 6,120 columns and their feature-cache key are unchanged. List them in the
`channels` setting of any family that has one (`intensity`, `hist`, `haralick`, `zernike`,
`tas`, `gabor`, `granulometry`; `lbp` takes them inside its `configs`); the feature settings are
part of the cache key, so features with and without them are never mixed:

```yaml
features:
  name: handcrafted
  params:
    profile: full
    feature_settings:   # the profile's 12 channels, then the two stain channels
      intensity: {channels: &stain [red, green, blue, grey, hsv_h, hsv_s, hsv_v, lab_l, lab_a, lab_b,
                                    hed_h, hed_e, methylblue_od, eosin_od]}
      hist: {channels: *stain}
```

In Python, `stain_feature_settings(profile, families)` (`cytocompare_classical.features.stain`)
builds that mapping (every family with a `channels` setting by default: 7,572 features, ~10 ms
more per cell). Columns are named like the others: `nucleus.methylblue_od.intensity.mean`,
`cytoplasm.eosin_od.haralick_d1.contrast_mean`. A misspelt channel is refused before any image is
read, naming the setting and listing the channels.

**Definition.** Per RGB channel, `OD = -log((I + 1) / (I0 + 1))`, with `I0` the image's own
background colour: the median colour of the brightest 5 % (by luminance) of the pixels outside the
segmented cell (white when the cell fills the image). A lamp, a camera gain or a background tint
multiplies a channel's intensities and its `I0` alike, so the OD does not change (Beer-Lambert). The
OD is unmixed with scikit-image's `separate_stains` and its Giemsa matrix `bex_from_rgb` (Methyl
Blue + Eosin); amounts below 0 are 0, and [0, 3] OD maps to the channel's fixed [0, 1] range (less
than 0.3 % of the cells' pixels lie above 3, on Matek and PBC). MGG has no haematoxylin: the
basic azure / methylene-blue dyes play its part and load on the Methyl Blue vector.

![stain channels](features/stain_channels.png)

`docs/features/stain_channels.png`: one cell per class (EOS, LYT, MON, NGS; rows), Matek then
PBC (centre-cropped to 250 px): RGB, `methylblue_od`, `eosin_od` (0-2 OD from black to white).
The backgrounds, lavender and peach, both come out black; the violet nucleus is bright in both
channels (it absorbs red and green); the eosinophil granules are brighter in `eosin_od` than in
`methylblue_od`. PBC's `eosin_od` shows bright rims at nucleus borders, most likely colour
fringes (the camera's or the JPEG's colour channels not quite aligned at sharp edges): a lab
difference that no colour correction removes, and one reason why spread statistics shift below.

**Which matrix.** Measured with both matrices and the same background `I0` on 160 Matek and 160
PBC cells (40 each of EOS, LYT, MON, NGS; PBC centre-cropped to 250 px):

| | H&E (`rgb2hed`) Matek | Giemsa (`bex`) Matek | H&E PBC | Giemsa PBC |
|---|---|---|---|---|
| nucleus vs cytoplasm d' of the blue/H channel | 3.22 | 3.07 | 2.39 | 2.52 |
| OD left unexplained by the two stain vectors (median over cells) | 0.18 | **0.15** | 0.14 | **0.11** |
| correlation of the two channels within the cell | **0.86** | 0.92 | **0.69** | 0.75 |
| eosinophil vs neutrophil cytoplasm, AUC of the median eosin OD | 0.62 | **0.71** | **0.93** | 0.83 |

We use the Giemsa matrix: it models the MGG colours better in both labs (less OD outside the two
stains' plane) and tells eosinophil granules from neutrophil cytoplasm better on Matek, the lab the
classifiers learn from; nucleus/cytoplasm contrast is a tie. The H&E matrix keeps its place in the
default `hed_h`/`hed_e` channels (with `I0 = 255`). Both matrices put the violet nucleus in both
of their channels, hence the high correlations.

**No per-cell stain-strength normalisation.** Dividing the amounts by a per-cell reference makes
them blind to a uniformly stronger or weaker stain, but on real cells it made the two labs *less*
alike (median standardised shift of the 138 stain intensity features, as below; lower is better):

| `I0` and normalisation | shift | per class |
|---|---|---|
| `I0 = 255` (no background correction) | 0.62 | 0.80 |
| **`I0` = the image's background (the channels)** | **0.43** | **0.67** |
| and / the nucleus's median methyl-blue OD (both stains) | 0.59 | 0.79 |
| and / the nucleus's median, per stain | 0.86 | 1.14 |
| and / the cell's 99th percentile, per stain | 0.57 | 0.84 |
| and / the image's 99th percentile, per stain (Macenko's) | 0.66 | 0.83 |

The labs differ by more than a stain factor (nucleus-to-cytoplasm ratios differ too), so the
channels keep absolute amounts and correct only the background.

**Shift between the labs.** For each feature, `|mean_PBC - mean_Matek| / sd_Matek` over the cells
above; the median over a group's features (all cells; "per class": within each class, then the
mean over the 4 classes). Seed 0, and in brackets seed 1 (other cells):

| features | n | shift | per class | PBC values inside the Matek range |
|---|---|---|---|---|
| `intensity`, red/green/blue | 207 | 0.62 (0.63) | 0.74 (0.73) | 0.99 |
| `intensity`, the 12 default channels | 828 | 0.70 (0.72) | 0.91 (0.87) | 0.91 |
| **`intensity`, `methylblue_od`/`eosin_od`** | 138 | **0.43 (0.44)** | **0.67 (0.61)** | 0.97 |
| — location statistics (mean, min, max, rms, percentiles), RGB | 117 | 0.69 (0.71) | 0.80 (0.77) | 0.99 |
| — location statistics, stain OD | 78 | **0.35 (0.38)** | **0.59 (0.54)** | 0.99 |
| — spread and shape statistics (sd, skewness, entropy, ...), RGB | 90 | 0.54 (0.51) | 0.68 (0.69) | 0.98 |
| — spread and shape statistics, stain OD | 60 | 0.56 (0.52) | 0.80 (0.69) | 0.96 |
| `haralick` (distance 1), red/green/blue | 234 | 1.17 (1.11) | 1.36 (1.26) | 0.77 |
| `haralick` (distance 1), stain OD | 156 | 1.09 (1.13) | 1.38 (1.34) | 0.74 |

So the stain channels bring *where* a cell's stain values lie about twice as close between the labs
(location statistics 0.69 → 0.35), which is what background and lamp change; *how* they are spread
(sd, skewness, texture) shifts as much as in RGB: that depends on focus, JPEG and the segmentation,
which no colour correction touches. Within Matek the stain features hold as much class information
as the RGB ones (5-fold accuracy of a logistic regression on each group alone, 4 classes: 0.78 vs
0.77). Trained on Matek and tested on PBC, that regression is no better with them (0.40 vs 0.50 at
seed 0, 0.29 vs 0.28 at seed 1: too noisy at 160 cells to tell), so whether they raise the
classical arm's coverage on PBC needs a full external run (docs/external.md), not measured here.

Reproduce: `python plugins/cytocompare-classical/benchmarks/stain_shift.py --compare [--seed 1]
[--figure docs/features/stain_channels.png]` (~1 min on 2 cores).
"""
