"""Run notebooks under several CPU kernel sets ("dispatches") and report every float comparison's largest error.

Another machine runs other kernels (AVX-512 or AVX2 or neither; MKL's Intel or generic path), and the results differ
in their last bits. This script reproduces that on one machine: torch's own kernels follow `ATEN_CPU_CAPABILITY`,
MKL's BLAS follows `MKL_ENABLE_INSTRUCTIONS`, oneDNN follows `ONEDNN_MAX_CPU_ISA`. Each notebook runs once per
dispatch (`nbdev_test`, one process each); every `test_near` logs its error (`SSUB_TOL_LOG`), and the table says,
per comparison, its tolerance and the largest error seen under each dispatch.

    python tools/tolerances.py                                  # chapters 0-4 under every dispatch, then the table
    python tools/tolerances.py --dispatch default avx2 --notebooks '^0[0-4]' --no-table   # CI's second passes
"""
import argparse, json, os, re, subprocess, sys, tempfile, time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DISPATCHES = {                  # name -> environment; "native" is what this machine picks by itself
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "default": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}
PROBE = """import torch, hashlib
torch.manual_seed(0); a, b, x = torch.randn(300, 257), torch.randn(257, 311), torch.randn(64, 1000)
h = lambda t: hashlib.md5(t.numpy().tobytes()).hexdigest()[:8]
print(torch.backends.cpu.get_cpu_capability(), h(a @ b), h(x.softmax(-1)), h(torch.nn.functional.silu(x)))"""


def env_of(name: str) -> dict:
    # inductor's on-disk cache is not keyed on these variables: a kernel set of its own gets a cache of its own (a
    # shared one handed a compiled test NaN losses under avx2 and uncompilable C++ under default)
    cache = Path(tempfile.gettempdir()) / f"ssub_inductor_{name}"
    return {**os.environ, **DISPATCHES[name], **({"TORCHINDUCTOR_CACHE_DIR": str(cache)} if name != "native" else {})}


def probe(name: str) -> list[str]:
    "torch's CPU capability and hashes of a matmul, a softmax and a SiLU under a dispatch."
    out = subprocess.run([sys.executable, "-c", PROBE], env=env_of(name), capture_output=True, text=True, check=True)
    return out.stdout.split()


def run_one(nb: Path, name: str, logdir: Path, bindir: Path) -> tuple[bool, float, str]:
    log = logdir / name / f"{nb.stem}.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True); log.unlink(missing_ok=True)
    t0 = time.time()
    r = subprocess.run([str(bindir / "nbdev_test"), "--path", str(nb), "--n_workers", "0"], cwd=ROOT,
                       env={**env_of(name), "SSUB_TOL_LOG": str(log)}, capture_output=True, text=True)
    ok = r.returncode == 0 and "nbdev Tests Failed" not in r.stdout + r.stderr
    return ok, time.time() - t0, (r.stdout + r.stderr)[-3000:]


def table(logdir: Path, names: list[str]) -> str:
    "Markdown: one row per comparison (notebook, source line), its tolerance, the largest error under each dispatch."
    rows = defaultdict(dict)
    for name in names:
        for f in sorted((logdir / name).glob("*.jsonl")):
            for l in map(json.loads, f.read_text().splitlines()):
                r = rows[f.stem, l["line"]]
                r["rel"] = max(r.get("rel", 0), l["rel"])
                r[name] = max(r.get(name, 0), l["err"])
    head = ["notebook", "comparison", "rel"] + names + ["margin"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (nb, line), r in rows.items():
        worst = max(r.get(n, 0) for n in names)
        cells = [nb, "`" + line.replace("|", "\\|")[:90] + "`", f"{r['rel']:.0e}"] + \
                [f"{r[n]:.1e}" if n in r else "-" for n in names] + [f"{r['rel'] / worst:.2g}x" if worst else "exact"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dispatch", nargs="+", default=list(DISPATCHES), choices=list(DISPATCHES))
    ap.add_argument("--notebooks", default="^0[0-4]", help="regex on notebook file names (default: chapters 0-4)")
    ap.add_argument("--logdir", type=Path, default=None, help="where the error logs go (default: a temporary folder)")
    ap.add_argument("--jobs", type=int, default=2, help="notebooks run at once")
    ap.add_argument("--no-table", action="store_true", help="only the pass/fail lines")
    ap.add_argument("--out", type=Path, help="also write the table here")
    a = ap.parse_args()
    nbs = sorted(p for p in (ROOT / "nbs").glob("*.ipynb") if re.search(a.notebooks, p.name))
    if not nbs: sys.exit(f"tools/tolerances.py: --notebooks {a.notebooks!r} matches no notebook in nbs/")
    logdir = a.logdir or Path(tempfile.mkdtemp(prefix="ssub-tol-"))
    bindir = Path(sys.executable).parent
    base = probe("native")
    failed = 0
    for name in a.dispatch:
        p = probe(name)
        diff = [k for k, x, y in zip(("matmul", "softmax", "silu"), p[1:], base[1:]) if x != y]
        print(f"# dispatch {name}: {' '.join(f'{k}={v}' for k, v in DISPATCHES[name].items()) or 'as the machine picks'};"
              f" torch capability {p[0]}; differs from native in: {', '.join(diff) or 'nothing'}", flush=True)
        with ThreadPoolExecutor(a.jobs) as ex:
            for nb, (ok, s, tail) in zip(nbs, ex.map(lambda nb: run_one(nb, name, logdir, bindir), nbs)):
                print(f"{'ok  ' if ok else 'FAIL'} nbdev_test[{name}] {nb.name} ({s:.0f} s)", flush=True)
                if not ok: failed += 1; print(tail, flush=True)
    if not a.no_table:
        t = table(logdir, a.dispatch)
        print(t)
        if a.out: a.out.write_text(t + "\n")
    print(f"# error logs in {logdir}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
