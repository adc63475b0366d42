#!/usr/bin/env bash
# One call of the workplace's device tool (a lent GPU machine) for nclt: the CUDA tests and/or
# reproduction rows, within a time budget, everything worth keeping written under $OUT.
#
# Prepare here, once per session (.device/ is git-ignored and travels with `carry`):
#   mkdir -p .device/shared/data .device/shared/tools
#   cp ../shared/data/cifar10-jpeg.tar.gz .device/shared/data/
#   cp ../shared/tools/cifar10_batches.py .device/shared/tools/
# Then, through the device tool (15 device-minutes a session, 10 a command):
#   run(command="bash benchmarks/device_session.sh --tests --rows bcl --imbalance 50 --budget 420",
#       carry=[".device"], timeout_s=570)
# Sizes seen on an H200 (2026-12-04): tests/cuda ~50 s, unpacking CIFAR ~10 s, a CE-like row
# ~5,300 images/s with 12 workers (IF 100 ~8 min, IF 10 ~13 min); the machine's start ~30 s.
# Back here: tar -xzf FILES_AT/results.tgz   (results/cifar10_lt/IF<f>/<row>/..., then
# `nclt reproduce --markdown`); a row stopped by the budget comes back as stopped.tgz: put it in
# .device/ (tar -xzf FILES_AT/stopped.tgz -C .device) and the next call resumes it.
#
# The machine has its own python3 with PyTorch, torchvision, torchmetrics, tensorboard,
# scikit-learn and matplotlib (not nclt's pins): nclt runs from src/ without installing.
# POT is absent there; nclt uses it only to cross-check its own Sinkhorn.
set -uo pipefail
cd "$(dirname "$0")/.."

TESTS=0 ROWS="" IMBALANCE=100 BUDGET=480 WORKERS=12 SEEDS=0 DEVICE=cuda
while [ $# -gt 0 ]; do
  case "$1" in
    --tests) TESTS=1 ;;
    --rows) ROWS="$2"; shift ;;
    --imbalance) IMBALANCE="$2"; shift ;;
    --budget) BUDGET="$2"; shift ;;   # seconds of training before the queue is stopped (SIGTERM)
    --workers) WORKERS="$2"; shift ;;
    --seeds) SEEDS="$2"; shift ;;
    --device) DEVICE="$2"; shift ;;  # cpu: a check of this script on a machine without a GPU
    *) echo "device_session.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
OUT="${OUT:-/tmp/nclt_out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
LOG="$OUT/device.log"
say() { echo "== $*" | tee -a "$LOG"; }

say "$(date -u +%FT%TZ) $(nvidia-smi -L 2>/dev/null | head -1)"
python3 -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision",
  torchvision.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' \
  2>&1 | tee -a "$LOG"

status=0
if [ "$TESTS" = 1 ]; then
  say "CUDA tests"
  python3 -m pytest -q -p no:cacheprovider tests/cuda 2>&1 | tee "$OUT/cuda_tests.log" | tail -15
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi

if [ -n "$ROWS" ]; then
  DATA=/tmp/nclt_data RUNS="$PWD/.device/runs"   # .device/runs: runs stopped by an earlier call
  if [ ! -d "$DATA/cifar-10-batches-py" ]; then
    say "unpacking CIFAR-10"
    python3 .device/shared/tools/cifar10_batches.py "$DATA" 2>&1 | tee -a "$LOG"
    [ -d "$DATA/cifar-10-batches-py" ] || { say "no CIFAR-10 copy in .device/shared (see the head of this script)"; exit 2; }
  fi
  mkdir -p "$RUNS" && touch /tmp/nclt_queue_start
  say "rows $ROWS at IF $IMBALANCE, seeds $SEEDS, budget ${BUDGET}s"
  timeout --foreground -s TERM -k 60 "$BUDGET" python3 -m nclt reproduce --run "$ROWS" \
    --imbalance "$IMBALANCE" --seeds "$SEEDS" --data-root "$DATA" --runs "$RUNS" \
    --set "device=$DEVICE" --set "data.num_workers=$WORKERS" --set progress=false 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  say "queue exit code $rc (124 / 143: stopped by the budget; its rows resume next call)"
  # what the queue collected into results/ ...
  changed=$(find results -type f -newer /tmp/nclt_queue_start | sort)
  if [ -n "$changed" ]; then
    tar -czf "$OUT/results.tgz" $changed && say "results.tgz: $(echo "$changed" | wc -l) files"
  fi
  # ... and the runs it left unfinished: last.pt, config.yaml, metrics.csv (all --resume
  # needs) and kept branch points, paths relative to .device/
  stopped=$(cd .device && find runs -name last.pt -printf '%h\n' | sort \
    | while read -r d; do [ -f "$d/results.json" ] || echo "$d"; done)
  if [ -n "$stopped" ]; then
    files=$(cd .device && for d in $stopped; do
      ls "$d"/last.pt "$d"/config.yaml "$d"/metrics.csv "$d"/epoch_*.pt 2>/dev/null; done)
    tar -czf "$OUT/stopped.tgz" -C .device $files
    say "stopped.tgz: $(echo "$stopped" | wc -l) unfinished run(s), $(du -h "$OUT/stopped.tgz" | cut -f1)"
  fi
  [ "$rc" = 0 ] || [ "$rc" = 124 ] || [ "$rc" = 143 ] || status=1
fi
say "done (status $status)"
exit $status
