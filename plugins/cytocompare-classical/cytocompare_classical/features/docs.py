"""Render ``docs/features.md`` from the families' docstrings, settings and feature descriptions,
and from the segmentation's parameters (so the reference cannot drift from the code)."""

from __future__ import annotations

from typing import Any

_HOW_TO_ADD = """\
## Adding a family (one file)

A family is one module in `plugins/cytocompare-classical/cytocompare_classical/features/`; the
feature set finds it by importing every module there (`features/registry.py`), so nothing else
is edited: not the profiles, not a list of families, not the channels to compute.

```python
\"\"\"Dark fractions: how much of a mask is darker than fixed levels (one module, one family).\"\"\"

import numpy as np

from cytocompare_classical.features.base import (
    FILL_VALUE, MASKS, CellContext, FeatureFamily, Setting, check_channels, check_positive_numbers,
)
from cytocompare_classical.features.registry import register_family


@register_family
class DarkFraction(FeatureFamily):
    \"\"\"Fraction of a mask's pixels below each level of a channel (the docs print this).\"\"\"

    name = "dark"           # unique: the `<family>` part of the names, and the timings key
    column_order = 110      # unique: columns follow increasing order (the built-in ones: 10 ... 100)
    settings_spec = {       # default = the "full" value; other profiles only where they differ
        "channels": Setting(("grey", "hed_h"), "channels measured", check=check_channels, quick=("grey",)),
        "levels": Setting((0.25, 0.5), "levels on [0, 1]", check=check_positive_numbers, quick=(0.5,)),
    }
    feature_docs = {"below_NN": "fraction of mask pixels below level NN / 100"}

    def names(self) -> list[str]:  # from the settings alone: known before any image
        s = self.settings
        return [f"{m}.{c}.dark.below_{round(t * 100):02d}" for m in MASKS for c in s.channels for t in s.levels]

    def compute(self, ctx: CellContext) -> np.ndarray:  # len(names()) values, in that order
        out = []
        for m in MASKS:
            for c in self.settings.channels:
                v = ctx.channels[c][ctx.masks[m]]
                out += [float((v < t).mean()) if v.size else FILL_VALUE for t in self.settings.levels]
        return np.array(out)
```

* The channels a family needs come from its `channels` setting (override `channels_needed()`
  when they are given another way, as `lbp` does); the feature set computes the union once.
* Settings are validated when the feature set is built (the extractor's first use): an unknown
  setting or a value its `check` refuses raises `ValueError` naming `<family>.<setting>`; every
  profile's own values are checked at registration. Names must stay unique across all families.
* This example is a test: `test_feature_families.py` saves it as a module beside the others
  and checks that the extractor then computes its columns, after the built-in ones.
* A family with no columns in a profile (e.g. `tas` in `quick`, `channels: []`) is skipped.
* Adding a family changes the feature names of every profile, hence the feature cache's key:
  stores of the old set are not reused (they are never mixed up).
* Regenerate this page with `write_feature_docs("docs/features.md")`; a test checks it is current.
"""


#: CPU ms per cell of each step, measured side by side in one run of
#: ``benchmarks/bench_features.py --n 60 --pbc-n 20 --baseline 5e13e9f --warm`` (80 real cells:
#: 60 of matek-bm, 20 of pbc; one process, BLAS on one thread, process CPU time, every cell once
#: untimed first) on the shared 2-core machine at load average ~2-4; compare the columns
_COST_BASE = "5e13e9f"
_COST_MS: dict[str, tuple[float, float]] = {
    "segmentation": (51.9, 25.7), "channels": (8.5, 4.7), "shape": (20.8, 12.4), "intensity": (3.3, 3.4),
    "hist": (1.9, 2.0), "haralick": (21.7, 15.3), "lbp": (13.6, 12.3), "zernike": (7.3, 7.6),
    "tas": (3.8, 3.9), "gabor": (15.0, 12.2), "granulometry": (3.3, 3.2),
}
_COST_TOTAL_S = (0.152, 0.103)
_COST_DECODE_MS = (0.9, 1.1)

_COST_NOTES = """\
Measured side by side in one run of `benchmarks/bench_features.py --n 60 --pbc-n 20 --baseline
5e13e9f --warm` on 80 real cells (60 of matek-bm, 20 of pbc), one process, BLAS on one thread,
process CPU time, every cell computed once untimed first (so the Gabor kernel bank of each
padded crop size is built, as in a long run), on the shared 2-core machine at load average
~2-4. Contention inflates CPU time as well (the previous round read 0.33 s a cell at load ~28;
5e13e9f read 0.18 s on the quiet machine without `--warm`, the current code 0.10 s), so compare
the columns rather than the absolute figures. With the JPEG decode (~1 ms) a cell costs ~0.10
CPU-s: 171,374 cells take ~18 min on 16 cores (docs/scaling.md).

Where the CPU went (issue #9): the segmentation's binary openings and closings and its distance
transforms run in OpenCV (`cv2.erode`/`dilate` with the same disk and a zero border;
`cv2.distanceTransform`'s exact transform, whose float32 roots give the integer squared distances
back), the watershed runs on the bounding box of its mask, labels are selected by look-up table
and centroids by bincount; `shape` draws the convex hull row by row from skimage's own hull
polygon, takes the perimeter from the erosion it already has, and walks the longest contour
itself (skimage's marching-squares table; its Python contour assembly cost ~1.5 ms a mask);
`haralick` gathers with `np.take`; `lbp` keeps uint8 codes and picks the nucleus and cytoplasm
out of the cell's pixels; `gabor` inverts its FFTs as two 1-D passes, the second over the kept
rows only; the HSV channels skip skimage's boolean-indexed assignments.

None of this changes a value: on those 80 cells all 6,120 features are bit-identical to the
earlier code's, and on 700 real cells (500 matek-bm, 200 pbc) the masks are identical. The tests
compare each fast piece with the call it replaced (`ndimage`, `skimage`, `scipy.fft.ifft2`, on
random and real masks, HSV on 86^3 8-bit colours, all 2^24 checked once), the whole segmentation with the ndimage
implementation patched back in, and full rows of 6 bundled cells with a stored reference of the
earlier code (`tests/data/feature_rows_5e13e9f.npz`, rtol 1e-6 / atol 1e-9), so the feature
cache's key (the plugin version) stays. The earlier round (ab2e20c: 0.46 → 0.33 CPU-s at load
~28) vectorised `tas`, `haralick` and `granulometry` the same way, each checked against a plain
reference. Re-measure with `python plugins/cytocompare-classical/benchmarks/bench_features.py
--warm --baseline REV` (`--reference`/`--save` compare with a stored matrix, `--cprofile` profiles).
"""


def render() -> str:
    from cytocompare_classical.features import CHANNELS, FILL_VALUE, MASKS, PROFILE_NAMES, STAIN_CHANNELS, feature_set
    from cytocompare_classical.features.stain import DOCS as STAIN_DOCS
    from cytocompare_classical.segmentation import SegmentationParams

    sets = {p: feature_set(p) for p in PROFILE_NAMES}
    full = sets["full"]
    totals = [len(fs.names()) for fs in sets.values()]
    lines = [
        "# Handcrafted features (`handcrafted`, plugin cytocompare-classical)",
        "",
        "<!-- generated by cytocompare_classical.features.write_feature_docs; do not edit by hand -->",
        "",
        "Krappe et al.'s exact feature list was never published (Matek et al. 2021 report only",
        "\">6,000 features\" of shape, colour and texture from the segmented nucleus and cytoplasm,",
        "then mRMR and an SVM). This is **our own documented set of comparable size and families**,",
        "not a reproduction of theirs.",
        "",
        f"* profile `full`: **{len(full.names())} features**; profile `quick`: "
        f"{len(sets['quick'].names())} features (CI and conformance runs).",
        f"* masks: {', '.join(f'`{m}`' for m in MASKS)} (`cell = nucleus | cytoplasm`), from",
        "  `cytocompare_classical.segmentation.segment_cell` (stain-aware thresholds, central nucleus;",
        "  its parameters are [below](#segmentation-parameters)).",
        "* names: `<mask>.<channel>.<family>[_<param>].<feature>`, `<mask>.shape.<feature>`,",
        "  `relation.shape.<feature>` and `qc.segmentation_ok`; the column order is fixed.",
        f"* undefined values (empty mask, zero variance, failed segmentation) are `{FILL_VALUE}`; every",
        "  feature is finite. A failed segmentation gives a row of fill values with",
        "  `qc.segmentation_ok = 0` and is listed in the extractor's `failures_`",
        "  (`on_segmentation_failure: raise` stops with a DataError naming the image instead).",
        "",
        "## Extractor parameters",
        "",
        "```yaml",
        "features:",
        "  name: handcrafted",
        "  params:",
        "    profile: full                      # or quick: where every family's settings start",
        "    feature_settings:                  # optional, per family: overrides the profile's values",
        "      haralick: {distances: [1, 2]}",
        "      tas: {channels: []}              # a family with no channels gives no columns",
        "    segmentation: {min_violet: 20}     # optional: overrides of the segmentation parameters",
        "    on_segmentation_failure: fill      # or raise",
        "```",
        "",
        "Each family's settings are listed with the family below. An unknown family, setting or",
        "segmentation parameter, or a bad value, raises a `ValueError` naming it the first time the",
        "extractor is used (`get_feature_names_out`, `fit` or `transform`), before any feature is",
        "computed. Both overrides are extractor parameters, hence part of the feature cache's key:",
        "features computed with other settings are never reused.",
        "",
        "## Channels",
        "",
        "| channel | definition |",
        "|---|---|",
        *[f"| `{k}` | {v} |" for k, v in CHANNELS.items()],
        *[f"| `{k}` | {v} |" for k, v in STAIN_CHANNELS.items()],
        "",
        STAIN_DOCS,
        "## Families",
        "",
        "| family | " + " | ".join(PROFILE_NAMES) + " |",
        "|---|" + "---|" * len(PROFILE_NAMES),
        *[f"| `{fam.name}` | " + " | ".join(str(len(sets[p].family(fam.name).names())) for p in PROFILE_NAMES) + " |"
          for fam in full.families],
        "| **total** | " + " | ".join(f"**{n}**" for n in totals) + " |",
        "",
    ]
    for fam in full.families:
        d = fam.describe()
        lines += [f"### `{fam.name}` ({type(fam).__name__})", "", str(d["doc"]), ""]
        lines += _settings_table(fam.name, type(fam).settings_spec, sets)
        lines += ["| feature | description |", "|---|---|"]
        lines += [f"| `{k}` | {v} |" for k, v in fam.feature_docs.items()]
        example = fam.names()[:2]
        lines += ["", "Examples: " + ", ".join(f"`{e}`" for e in example), ""]
    lines += [
        "## Cost per family",
        "",
        f"| step | CPU ms per cell before ({_COST_BASE}) | after |",
        "|---|---|---|",
        *[f"| `{k}` | {a:.1f} | {b:.1f} |" for k, (a, b) in _COST_MS.items()],
        f"| **total** | **{1000 * _COST_TOTAL_S[0]:.0f}** | **{1000 * _COST_TOTAL_S[1]:.0f}** |",
        f"| JPEG decode | {_COST_DECODE_MS[0]:.1f} | {_COST_DECODE_MS[1]:.1f} |",
        "",
        _COST_NOTES,
    ]
    lines += [_HOW_TO_ADD]
    lines += [
        "## Segmentation parameters",
        "",
        "`segment_cell` runs named steps (`smoothed_green_and_violet`, `green_thresholds`,",
        "`nucleus_candidates`, `central_component`, `merge_lobes`, `cytoplasm_and_cell`); their",
        "thresholds and sizes are the fields of `SegmentationParams`, set through the extractor's",
        "`segmentation` parameter. Sizes are pixels at a 250 px image side and scale with the image.",
        "",
        "| parameter | default | description |",
        "|---|---|---|",
        *[f"| `{k}` | {_value(v)} | {doc} |" for k, (v, doc) in SegmentationParams().describe().items()],
        "",
    ]
    return "\n".join(lines) + "\n"


def _value(v: Any) -> str:
    """A setting's value as a protocol would write it (lists, not tuples)."""
    def plain(x: Any) -> Any:
        return [plain(i) for i in x] if isinstance(x, tuple) else x

    return f"`{plain(v)!r}`".replace("'", "")


def _settings_table(family: str, spec: dict[str, Any], sets: dict[str, Any]) -> list[str]:
    if not spec:
        return ["Settings: none.", ""]
    profiles = list(sets)
    lines = ["| setting | " + " | ".join(profiles) + " | description |", "|---|" + "---|" * (len(profiles) + 1)]
    for key, setting in spec.items():
        values = [getattr(sets[p].family(family).settings, key) for p in profiles]
        shown = [_value(values[0])] + ["same" if v == values[0] else _value(v) for v in values[1:]]
        lines.append(f"| `{key}` | " + " | ".join(shown) + f" | {setting.doc} |")
    return lines + [""]
