"""Publish a finished comparison: copy its results.md, runs.csv and compare.png from a `ssub compare` folder into
results/<preset>/ (committed; nbs/index.ipynb shows results/cpu/results.md), then regenerate README.md.
    python tools/publish.py runs/compare            # preset read from results.md
The README's results table is never typed: it is this file, written by the run that produced it."""
import re, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def publish(run_dir: str) -> Path:
    src = Path(run_dir)
    md = (src / "results.md").read_text()
    m = re.match(r"Preset `(\w+)`", md)
    if m is None: raise SystemExit(f"{src / 'results.md'}: not written by ssub compare (no 'Preset `...`' line)")
    dst = ROOT / "results" / m.group(1)
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("results.md", "runs.csv", "compare.png"): shutil.copy2(src / name, dst / name)
    subprocess.run([sys.executable, str(ROOT / "tools/docs.py"), "--readme"], check=True)
    return dst

if __name__ == "__main__":
    if len(sys.argv) != 2: raise SystemExit(__doc__)
    print("published to", publish(sys.argv[1]))
