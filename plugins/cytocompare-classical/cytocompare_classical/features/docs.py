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
#: ``benchmarks/bench_features.py --n 60 --pbc-n 20 --baseline ab2e20c`` (80 real cells: 60 of
#: matek-bm, 20 of pbc; one process, BLAS on one thread, process CPU time) on the shared 2-core
#: machine at load average ~28: contention inflates CPU time too (the unchanged segmentation read
#: 45 → 49 ms between the two runs), so compare the columns, not the absolute figures
_COST_MS: dict[str, tuple[float, float]] = {
    "segmentation": (44.9, 49.2), "channels": (20.7, 22.0), "shape": (60.8, 46.6),
    "intensity": (9.2, 10.3), "hist": (4.3, 4.7), "haralick": (87.3, 57.9), "lbp": (54.2, 47.5),
    "zernike": (36.2, 26.9), "tas": (53.7, 8.7), "gabor": (46.5, 51.3), "granulometry": (45.1, 8.1),
}
_COST_TOTAL_S = (0.464, 0.334)

_COST_NOTES = """\
Measured side by side in one run of `benchmarks/bench_features.py --n 60 --pbc-n 20 --baseline
ab2e20c` on 80 real cells (60 of matek-bm, 20 of pbc), one process, BLAS on one thread, process
CPU time, on the shared 2-core machine at load average ~28: contention inflates CPU time as well
(the unchanged segmentation and gabor read 5-10 % more in the second column), so compare the
columns rather than the absolute figures; on a quiet machine the earlier code took ~0.37 s.

The speed-ups change no feature beyond rounding: on those 80 cells the largest difference of any
of the 6,120 values from the earlier code is 1.1e-13 (relative 2.5e-8), none is outside
rtol 1e-6 / atol 1e-9, integer-valued features are identical, and `tas`, `lbp`, `gabor`,
`granulometry`, `intensity` and `hist` are bit-identical (`test_features.py` checks each
vectorised family against a plain reference on bundled real cells). `gabor` includes building
the kernel bank of each padded crop size the first time it is seen (amortised in long runs).
Re-measure with `python plugins/cytocompare-classical/benchmarks/bench_features.py --baseline REV`.
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
        "| step | CPU ms per cell before (ab2e20c) | after |",
        "|---|---|---|",
        *[f"| `{k}` | {a:.1f} | {b:.1f} |" for k, (a, b) in _COST_MS.items()],
        f"| **total** | **{1000 * _COST_TOTAL_S[0]:.0f}** | **{1000 * _COST_TOTAL_S[1]:.0f}** |",
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
