#!/usr/bin/env bash
# One-step set-up: a virtual environment in .venv with cytocompare and its first-party plugins.
#   bash scripts/setup.sh            core + example + classical + deep (torch) plugins
#   CYTOCOMPARE_NO_DEEP=1 bash scripts/setup.sh     skip the torch plugin (smaller, faster)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
pkgs=(-e ".[test]" -e plugins/cytocompare-example -e plugins/cytocompare-classical)
if [ -z "${CYTOCOMPARE_NO_DEEP:-}" ]; then
  # torch/torchvision pinned to the wheels this project is tested with; explain extras for maps and UMAP
  pkgs+=(torch==2.14.1 torchvision==0.29.1 -e "plugins/cytocompare-deep[explain]")
fi
.venv/bin/python -m pip install -q "${pkgs[@]}"
echo "installed: $(.venv/bin/cytocompare --version)"
