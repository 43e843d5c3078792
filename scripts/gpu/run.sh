#!/usr/bin/env bash
# On the device machine (one H100): the deep arm's benchmark and the real training comparison.
#   here:   bash scripts/gpu/prepare.sh   (stages .device/p1..p3; see its header for the calls)
#   device: the parts p1, p2 in two short calls, then
#           run(command="bash scripts/gpu/run.sh", carry=[".device/p3"], timeout_s=590)
# It trains on whichever parts arrived (each is class-stratified) and says how many images that is.
# Order: install, GPU tests (pytest --run-gpu -m gpu; a failure stops the script with exit 5 unless
# KEEP_GOING=1), benchmarks, the comparison run.
# Back in $OUT (<= 8 files): log.txt, bench_resnext50.json, bench_sequential-cnn.json,
# table1_holdout80.md, recall_holdout80.png, summary.csv, paired_holdout80.md, run.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/cytocompare-gpu}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 SITE=/tmp/cytocompare-site
echo "== $(date -Is)"; nvidia-smi --query-gpu=name,memory.total --format=csv || true
# the device image has torch, torchvision, scikit-learn, scikit-image; the rest travels as wheels,
# and the project itself is installed (not just put on PYTHONPATH) so its entry points exist
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .device/p*/whl/*.whl || exit 3
# the parts' class folders, merged (hard links) into the one data folder protocols/gpu.yaml reads
rm -rf .device/matek-bm && mkdir -p .device/matek-bm
for p in .device/p*/matek-bm; do cp -al "$p/." .device/matek-bm/; done
echo "== images: $(find .device/matek-bm -name '*.jpg' | wc -l) (2,800 when every part arrived) from $(ls -d .device/p*/matek-bm | wc -l) part(s)"
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target "$SITE" \
  . plugins/cytocompare-example plugins/cytocompare-classical plugins/cytocompare-deep || exit 3
export PYTHONPATH="$SITE"
python3 -m cytocompare plugins
echo "== GPU tests: pytest --run-gpu -m gpu (nvJPEG vs PIL, bf16 training, augmentation CUDA vs CPU)"
python3 -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 4
# pytest travels as wheels (whl-test/) for a device image that lacks it; an image's own pytest is kept
python3 -c "import pytest" 2>/dev/null || python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .device/p*/whl-test/*.whl || exit 3
if ! timeout 120 python3 -m pytest --run-gpu -m gpu -q -p no:cacheprovider plugins/cytocompare-deep/tests; then
  echo "== GPU TESTS FAILED (see above)"
  [ "${KEEP_GOING:-0}" = 1 ] || exit 5
fi
B=plugins/cytocompare-deep/benchmarks/bench_deep.py
echo "== benchmark: raw step vs end-to-end (decode + augmentation incl. stain + step)"
timeout 90 python3 $B --model resnext50 --images .device/matek-bm --json "$OUT/bench_resnext50.json" || echo "bench resnext50 stopped ($?)"
timeout 50 python3 $B --model sequential-cnn --images .device/matek-bm --json "$OUT/bench_sequential-cnn.json" || echo "bench sequential-cnn stopped ($?)"
echo "== comparison run (resumes if the machine is still warm and the run directory exists)"
# whatever is left of BUDGET seconds (the device call's limit less a margin for copying the results
# back); a stopped run resumes inside its fold on the next call
left=$(( ${BUDGET:-570} - SECONDS - 20 )); [ "$left" -gt 380 ] && left=380
echo "   (${left} s left for it)"
if [ "$left" -ge 30 ]; then  # (timeout 0 would mean no limit at all)
  timeout "$left" python3 -m cytocompare run protocols/gpu.yaml -o .device/run-gpu || echo "run stopped ($?)"
else
  echo "run skipped: too little time left; call again (the machine keeps what it has while warm)"
fi
python3 -m cytocompare report .device/run-gpu >/dev/null 2>&1 || true
R=.device/run-gpu
cp "$R/table1_holdout80.md" "$R/charts/recall_holdout80.png" "$R/metrics/summary.csv" "$R/paired_holdout80.md" "$OUT/" 2>/dev/null
tar czf "$OUT/run.tgz" -C .device run-gpu 2>/dev/null
echo "== done $(date -Is)"
