#!/usr/bin/env bash
# Here (no GPU needed): stage what the GPU check needs in the git-ignored .device/ folder, in parts
# that each fit one device-tool transfer (64 MiB, tracked files included):
#   .device/p1 ... .device/pN-1   images only
#   .device/pN                    images + wheels of the packages the device image lacks (pydantic,
#                                 mahotas, captum, grad-cam, umap-learn, ...) in whl/, and pytest's
#                                 in whl-test/ (used only where the image has no pytest)
# Images are dealt round-robin per class (after a seeded shuffle), so every part is class-stratified
# and a run that receives only some parts still trains on a balanced random sample.
#   PER_CLASS=all (default) or a number; PARTS=3 (default); SRC=../shared/data/matek-bm
# Then, on the device (back to back: a warm machine keeps the parts it already received):
#   run(command="find .device -name '*.jpg' | wc -l", carry=[".device/p1"], timeout_s=60)
#   run(command="find .device -name '*.jpg' | wc -l", carry=[".device/p2"], timeout_s=60)
#   run(command="bash scripts/gpu/run.sh", carry=[".device/p3"], timeout_s=590)
set -euo pipefail
cd "$(dirname "$0")/../.."
PER_CLASS=${PER_CLASS:-all}
PARTS=${PARTS:-3}
SRC=${SRC:-../shared/data/matek-bm}
LIMIT=$((64 * 1048576))
rm -rf .device/matek-bm .device/whl .device/p[0-9]*
for k in $(seq 1 "$PARTS"); do mkdir -p ".device/p$k/matek-bm"; done
for dir in "$SRC"/*/; do
  cls=$(basename "$dir")
  for k in $(seq 1 "$PARTS"); do mkdir -p ".device/p$k/matek-bm/$cls"; done
  # a seeded shuffle, so a subset is a random sample of the class and not its first files
  mapfile -t files < <(find "$dir" -name '*.jpg' | sort | shuf --random-source=<(yes 42))
  n=${#files[@]}
  [ "$PER_CLASS" = all ] || n=$(( PER_CLASS < n ? PER_CLASS : n ))
  for ((i = 0; i < n; i++)); do
    cp "${files[$i]}" ".device/p$(( i % PARTS + 1 ))/matek-bm/$cls/"
  done
done
WHL=".device/p$PARTS/whl"
mkdir -p "$WHL"
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
for spec in pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.7.0 typing-inspection==0.4.5 \
            mahotas==1.4.19 captum==0.9.0 ttach==0.0.3 umap-learn==0.5.12 pynndescent==0.7.0; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" -d "$WHL" "$spec"
done
# grad-cam is published as an sdist only: build its (pure-Python) wheel here
python3 -m pip wheel -q --no-deps grad-cam==1.5.7 -w "$WHL"
# pytest for run.sh's GPU tests, installed there only when the device image has none (kept apart,
# so that an image's own pytest/pluggy is not shadowed)
for spec in pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 pygments==2.21.0 packaging==26.4; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" -d "$WHL-test" "$spec"
done
tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
status=0
for k in $(seq 1 "$PARTS"); do
  part=$(du -sb ".device/p$k" | cut -f1)
  echo "part p$k: $(find ".device/p$k" -name '*.jpg' | wc -l) images, $(( (tracked + part) / 1048576 )) MiB with the tracked files (limit 64)"
  [ $((tracked + part)) -lt "$LIMIT" ] || { echo "part p$k too large: raise PARTS or lower PER_CLASS" >&2; status=1; }
done
echo "staged: $(find .device -name '*.jpg' | wc -l) images in $PARTS parts, $(ls "$WHL" | wc -l) + $(ls "$WHL-test" | wc -l) wheels in p$PARTS"
exit $status
