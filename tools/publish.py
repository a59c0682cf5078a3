"""Publish a finished comparison: copy its results.md, runs.csv and compare.png from a `ssub compare` folder into
results/<preset>/ (committed; nbs/index.ipynb shows them in the README), then regenerate README.md. A run whose CPU
kernels were forced (ATEN_CPU_CAPABILITY=..., to reproduce another machine's rounding) goes to
results/<preset>-<kernels>/ and the README sets its verdicts beside the native run's.
    python tools/publish.py runs/compare            # preset and kernels read from results.md
The README's results table is never typed: it is this file, written by the run that produced it."""
import re, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def destination(md: str, where: Path) -> Path:
    "results/<preset> for a run on the machine's own kernels, results/<preset>-<kernels> for forced ones."
    m = re.match(r"Preset `(\w+)`", md)
    if m is None: raise SystemExit(f"{where}: not written by ssub compare (no 'Preset `...`' line)")
    k = re.search(r"(\w+) kernels \(", md)                       # any forcing variable: another kernel set
    return ROOT / "results" / (m.group(1) + (f"-{k.group(1).lower()}" if k else ""))

def publish(run_dir: str) -> Path:
    src = Path(run_dir)
    dst = destination((src / "results.md").read_text(), src / "results.md")
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("results.md", "runs.csv", "compare.png"): shutil.copy2(src / name, dst / name)
    subprocess.run([sys.executable, str(ROOT / "tools/docs.py"), "--readme"], check=True)
    return dst

if __name__ == "__main__":
    if len(sys.argv) != 2: raise SystemExit(__doc__)
    print("published to", publish(sys.argv[1]))
