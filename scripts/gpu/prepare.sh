#!/usr/bin/env bash
# Here (no GPU needed): stage what the GPU check needs in the git-ignored .device/ folder.
#  * a class-stratified subset of ../shared/data/matek-bm (PER_CLASS images per class, ~41 KB each)
#  * wheels of the pure-Python dependencies the device image lacks (pydantic, mahotas, captum, ...)
# Everything must fit the device tool's 64 MiB transfer together with the tracked files (~13 MB):
# 150 per class is ~43 MB of images + ~5 MB of wheels. The script checks the total at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
PER_CLASS=${PER_CLASS:-150}
SRC=${SRC:-../shared/data/matek-bm}
rm -rf .device/matek-bm .device/whl && mkdir -p .device/matek-bm .device/whl
for dir in "$SRC"/*/; do
  cls=$(basename "$dir"); mkdir -p ".device/matek-bm/$cls"
  # a seeded shuffle, so the subset is a random sample of the class and not its first files
  find "$dir" -name '*.jpg' | sort | shuf -n "$PER_CLASS" --random-source=<(yes 42) | xargs -I{} cp {} ".device/matek-bm/$cls/"
done
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
for spec in pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.7.0 typing-inspection==0.4.5 \
            mahotas==1.4.19 captum==0.9.0 ttach==0.0.3 umap-learn==0.5.12 pynndescent==0.7.0; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" -d .device/whl "$spec"
done
# grad-cam is published as an sdist only: build its (pure-Python) wheel here
python3 -m pip wheel -q --no-deps grad-cam==1.5.7 -w .device/whl
echo "staged: $(find .device/matek-bm -name '*.jpg' | wc -l) images, $(ls .device/whl | wc -l) wheels, $(du -sh .device | cut -f1)"
tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
staged=$(du -sb .device | cut -f1)
total=$((tracked + staged))
echo "transfer: $((total / 1048576)) MiB of the device tool's 64 MiB (tracked files + .device)"
[ "$total" -lt $((64 * 1048576)) ] || { echo "too large: lower PER_CLASS" >&2; exit 1; }
