"""Write the built-in demo dataset (EDF) and its ground-truth sidecar.

Usage: python scripts/make_demo.py OUT_DIR TRUTH_JSON
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from oddpipe.demo import generate  # noqa: E402

if __name__ == "__main__":
    out_dir, truth = Path(sys.argv[1]), Path(sys.argv[2])
    paths = generate(out_dir, truth)
    print(f"wrote {len(paths)} demo recordings to {out_dir}, ground truth in {truth}")
