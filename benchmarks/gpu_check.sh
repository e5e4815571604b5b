#!/usr/bin/env bash
# GPU check (issue 15): where a CUDA GPU is present, the run-overhead (bench_run.py), scan
# (bench_scan.py) and eval (bench_eval.py) benchmarks on it, in float32 and under bf16 autocast,
# printed as one table. Random resnet50 weights (no download) and the bundled demo fixture, so
# it needs no network; every step has its own time limit and the whole stays under 5 minutes.
# Without a GPU it says so and exits 0.
#
#     benchmarks/gpu_check.sh          # PYTHON=... to choose the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
then
  echo "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False): nothing to measure"
  exit 0
fi
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

step() {  # step NAME SECONDS SCRIPT ARGS...: one benchmark, its JSON into $OUT/NAME.json
  local name=$1 limit=$2
  shift 2
  if ! timeout "$limit" "$PY" "$@" --json "$OUT/$name.json" >"$OUT/$name.log" 2>&1; then
    echo "gpu_check: $name failed or ran past ${limit} s: $(tail -n 1 "$OUT/$name.log")"
  fi
}

for amp in fp32 bf16; do
  extra=()
  if [ "$amp" = bf16 ]; then extra=(--autocast bf16); fi
  # limits: 2 x (45 + 45 + 60) s = 300 s at most; the first eval compiles the metric kernels
  step "run-$amp" 45 benchmarks/bench_run.py --models resnet50 --batch 32 --repeats 10 \
    --device cuda ${extra[@]+"${extra[@]}"}
  step "scan-$amp" 45 benchmarks/bench_scan.py --model resnet50 --images 128 --size 224 \
    --batch-size 64 --runs 3 --device cuda ${extra[@]+"${extra[@]}"}
  step "eval-$amp" 60 benchmarks/bench_eval.py --model resnet50 --batch-size 32 --runs 3 \
    --device cuda ${extra[@]+"${extra[@]}"}
done

"$PY" - "$OUT" <<'PYEOF'
import json, pathlib, sys

import torch

rows = [json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).glob("*.json"))]
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"gpu_check on {gpu}, torch {torch.__version__}, CUDA {torch.version.cuda}")
print("| benchmark | model | batch | precision | bare | camviz | unit | camviz / bare time |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for r in sorted(rows, key=lambda r: (r["bench"], r["autocast"] or "")):
    fmt = (lambda v: f"{v * 1e3:.2f} ms") if r["unit"] == "s per batch" else (
        lambda v: f"{v:.0f}")
    unit = "per batch" if r["unit"] == "s per batch" else r["unit"]
    print(f"| {r['bench']} | {r['model']} | {r['batch']} | {r['autocast'] or 'fp32'} | "
          f"{fmt(r['bare'])} | {fmt(r['camviz'])} | {unit} | {r['ratio']:.3f} |")
if not rows:
    sys.exit("gpu_check: no benchmark finished")
PYEOF
