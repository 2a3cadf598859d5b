#!/usr/bin/env bash
# `make train-full`: the nightly recipe run once. params.yaml *is* the production recipe (the nightly
# run and the drift-triggered retrain of dags/training.py train exactly the same), so this passes no
# `-S` flags: realistic data, then every stage as a DVC experiment, then the quality benchmark against
# the off-the-shelf model (bench/quality_bench.py). Afterwards `dvc repro` has nothing to do and
# `git diff params.yaml` is empty.
#
# Recipe (params.yaml `drop` / `prepare` / `train`): one training drop of FULL_N pairs (default drop.n,
# 1200) mixing the synthetic renderer and real Fashion-MNIST train products by `drop.shares`, each drawn
# with the broad per-seed studio/light/camera/product/framing variety (`drop.variety`) → 70/15/15 split;
# U²-NetP fine-tuned from the official weights at 320 px with 2 Horovod processes, 3 epochs at lr 1e-4
# (encoder × 0.1), then the best WiSE-FT blend with the official weights (`train.wise_alphas`);
# `train.precision: auto` trains in bf16 where the CPU (AMX, AVX512-BF16) or GPU runs it natively, fp32
# elsewhere (slower: a 320 px step is 2.2–2.7× faster in bf16, bench/precision_bench.py).
# Timing: the wall time of data + pipeline goes to bench/results/train_full_timing.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$(pwd)/.venv/bin:$PATH"
N=${FULL_N:-$(python -c "from backdrop.config import load_params; print(load_params().drop.n)")}
NAME=${FULL_NAME:-full-$(date -u +%Y%m%d-%H%M)}
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
if git rev-parse --git-dir >/dev/null 2>&1 && ! git diff --quiet HEAD -- params.yaml 2>/dev/null \
   && [ -z "${FULL_ALLOW_EDITED_PARAMS:-}" ]; then
  echo "params.yaml differs from the committed production recipe (\`make demo\` writes params.demo.yaml into it):" >&2
  echo "run \`git checkout params.yaml\` first, or FULL_ALLOW_EDITED_PARAMS=1 to train the edited recipe" >&2
  exit 2
fi
# A stopped `dvc exp run` can leave git's HEAD detached on the commit it started from: put the branch back.
branch=$(git symbolic-ref -q --short HEAD 2>/dev/null || true); head=$(git rev-parse -q HEAD 2>/dev/null || true)
reattach() {
  if [ -n "$branch" ] && ! git symbolic-ref -q HEAD >/dev/null && [ "$(git rev-parse -q HEAD)" = "$head" ]; then
    git symbolic-ref HEAD "refs/heads/$branch" && echo "train-full: HEAD re-attached to $branch" >&2
  fi
}
trap reattach EXIT
start=$(date +%s); load_start=$(cut -d' ' -f1-3 /proc/loadavg)
PRECISION=$(python -c '
import torch
from backdrop.config import load_params
from backdrop.training.loop import autocast_dtype
print("bf16" if autocast_dtype(load_params().train, torch.device("cpu")) else "fp32")')

step "1/3 data: a drop of $N product photos + masks in data/drop (synthetic + Fashion-MNIST train, broad variety)"
backdrop data drop --clean --n "$N"

export BACKDROP_RUN_KIND=train-full  # names the MLflow run train-full-<date>
step "2/3 dvc exp run $NAME: the params.yaml recipe, $PRECISION (ingest → validate → prepare → cluster → benchmark → train → evaluate → register)"
dvc exp run --name "$NAME"
end=$(date +%s)
dvc push -q || echo "dvc push failed: data and model stay in the local cache"
# What the nightly promises: `dvc repro` has nothing left to do and the recipe in params.yaml is untouched.
DVC_STATUS=$(dvc status --json 2>/dev/null || echo '"dvc status failed"')
if git diff --quiet HEAD -- params.yaml; then PARAMS_UNCHANGED=true; else PARAMS_UNCHANGED=false; fi
echo "train-full: dvc status $DVC_STATUS; params.yaml unchanged: $PARAMS_UNCHANGED"

python - "$start" "$end" "$N" "$NAME" "$load_start" "$PRECISION" "$DVC_STATUS" "$PARAMS_UNCHANGED" <<'PY'
import json, os, sys
from backdrop.host import cpu_info
start, end, n, name, load_start, precision = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4],
                                              sys.argv[5], sys.argv[6])
status = json.loads(sys.argv[7] or "null")
history = json.load(open("models/train/history.json"))
gate = json.load(open("metrics/register.json"))
out = {"experiment": name, "pairs": n, "precision": precision, "wall_seconds": end - start, "wall_hours": round((end - start) / 3600, 3),
       "loadavg_start": load_start, "loadavg_end": " ".join(f"{v:.2f}" for v in os.getloadavg()),
       "cpu_count": os.cpu_count(), "cpu": cpu_info(),
       "dvc_status_after": status, "dvc_repro_up_to_date": status == {}, "params_yaml_unchanged": sys.argv[8] == "true",
       "gate": {k: gate.get(k) for k in ("version", "promoted", "reason")}, "epochs": history,
       "wise": json.load(open("models/train/wise.json")) if os.path.exists("models/train/wise.json") else None}
os.makedirs("bench/results", exist_ok=True)
json.dump(out, open("bench/results/train_full_timing.json", "w"), indent=2)
print(f"train-full: {out['wall_hours']} h wall for data + pipeline (load {load_start} → {out['loadavg_end']})")
PY

# This run's model, promoted or not: the gate may keep the old champion (or none, below the stock model).
step "3/3 quality: this run's model vs official u2netp (rembg-style) on the test split and the OOD benchmark"
python bench/quality_bench.py --model models/train/model.pt
