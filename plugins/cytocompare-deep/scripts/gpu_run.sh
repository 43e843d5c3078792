#!/usr/bin/env bash
# The deep arm's GPU check, as ONE command for the device tool (one H100, about 8 minutes).
#
# Prepare here, once (copies 160 images per class, ~45 MiB, into the git-ignored .device/):
#     .venv/bin/python plugins/cytocompare-deep/scripts/gpu_train.py subset --per-class 160
# Then run on the device machine (repo root; carry the subset; the venv is NOT carried,
# the machine's python3 has torch/torchvision/numpy/PIL/matplotlib):
#     device run  command="bash plugins/cytocompare-deep/scripts/gpu_run.sh"
#                 carry=[".device/matek-bm"]  timeout_s=590
# Results come back from $OUT (<= 8 files): gpu_log.txt, bench_resnext50.json,
# bench_sequential-cnn.json, metrics.json, per_class.csv, predictions.csv, charts.png.
#
# Budget (derived from the target rates, not measured): 7 classes x 4,000 draws x 13 epochs =
# 364,000 images per model. ResNeXt-50 at >= 0.9 x 2,500 img/s -> ~160 s; the sequential CNN is
# bounded by augmentation (~tens of k img/s) -> < 60 s; both benchmarks ~2 x 45 s. Each stage has
# its own timeout so a slow stage cannot take the others' results with it; checkpoints live in
# .device/work, so rerunning on the still-warm machine resumes instead of restarting.
# Override: SPC=2000 EPOCHS=13 bash gpu_run.sh
set -uo pipefail
cd "$(dirname "$0")/../../.."
OUT="${OUT:-/tmp/cytocompare-gpu-out}"
DATA="${DATA:-.device/matek-bm}"
WORK="${WORK:-.device/work}"
SPC="${SPC:-4000}"
EPOCHS="${EPOCHS:-13}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$PWD:$PWD/plugins/cytocompare-deep${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
LOG="$OUT/gpu_log.txt"
exec > >(tee -a "$LOG") 2>&1
T="plugins/cytocompare-deep/scripts/gpu_train.py"
B="plugins/cytocompare-deep/benchmarks/bench_deep.py"
echo "== $(date -Is) $(hostname)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"
[ -d "$DATA" ] || { echo "no data at $DATA: run 'gpu_train.py subset' here and carry .device/matek-bm"; exit 2; }
echo "data: $(find "$DATA" -name '*.jpg' | wc -l) images"

echo "== 1. benchmarks"
timeout 120 $PY $B --model resnext50 --images "$DATA" --json "$OUT/bench_resnext50.json" || echo "bench resnext50 failed ($?)"
timeout 90 $PY $B --model sequential-cnn --images "$DATA" --json "$OUT/bench_sequential-cnn.json" || echo "bench sequential-cnn failed ($?)"

echo "== 2. training (stratified 80/20 holdout, seed 0, $EPOCHS epochs x $SPC draws/class)"
timeout 300 $PY $T train --data "$DATA" --work "$WORK" --model resnext50 --epochs "$EPOCHS" --samples-per-class "$SPC" || echo "resnext50 training stopped ($?)"
timeout 120 $PY $T train --data "$DATA" --work "$WORK" --model sequential-cnn --epochs "$EPOCHS" --samples-per-class "$SPC" || echo "sequential-cnn training stopped ($?)"

echo "== 3. report"
$PY $T report --work "$WORK" --out "$OUT" || echo "report failed ($?)"
echo "== done $(date -Is)"
