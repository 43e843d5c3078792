"""The classical arm's benchmark in one run: features per cell and seconds per cell per core,
mRMR against pymrmr on the same discretised input, and SVM fit times.

Usage: .venv/bin/python plugins/cytocompare-classical/benchmarks/bench_classical.py [--n 50] [--quick]
Each part is its own script (bench_features.py, bench_mrmr_svm.py), run here in sequence so that
the figures come from one invocation on one machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="real cells to time the features on")
    ap.add_argument("--quick", action="store_true", help="smaller mRMR/SVM sizes (smoke run)")
    args = ap.parse_args()
    print("== features (one process, one core)", flush=True)
    rc = subprocess.call([sys.executable, str(HERE / "bench_features.py"), "--n", str(args.n)])
    print("\n== mRMR and SVM", flush=True)
    rc |= subprocess.call([sys.executable, str(HERE / "bench_mrmr_svm.py")] + (["--quick"] if args.quick else []))
    return rc


if __name__ == "__main__":
    sys.exit(main())
