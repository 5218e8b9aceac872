#!/usr/bin/env bash
# The GPU half of BENCHMARKS.md, for a lent GPU machine that has no network, no ../shared and no biomtl
# dependencies beyond its own image (torch, transformers, scikit-learn, matplotlib, ...).
#
# Here, once:   python benchmarks/gpu_kit.py          # fills .carry/kit (fp16 encoder, prepared tasks, wheels)
# There, with the device tool's `run` and carry [".carry"], one step per call (each call ends within ~9.5 min):
#   bash benchmarks/gpu_session.sh check     # versions, GPU, the test suite with its CUDA tests (~2 min)
#   bash benchmarks/gpu_session.sh train     # HF recipe vs biomtl on BC5CDR-chemical, full data, 10 epochs
#   bash benchmarks/gpu_session.sh mfu       # BERT-base-shaped MFU, bf16 eager and compiled
#   bash benchmarks/gpu_session.sh study     # starts (or keeps waiting for) the full study: call it again
#                                            # until it prints "study finished"; the machine must stay warm
#                                            # between calls (30 s) or the background study is lost
#   bash benchmarks/gpu_session.sh pairwise  # the same for the full-profile pairwise table
#   bash benchmarks/gpu_session.sh brief     # for a 15-minute lease, first (~9 min): versions, the study
#                                            # encoder's training step with an operator trace, then one seed
#                                            # of the full study (background); call `study --seeds 1` next,
#                                            # at once, until it finishes
#   bash benchmarks/gpu_session.sh ratio     # the 2026-11-30 lease's call (~9 min): MFU traces, the training
#                                            # ratio, torch's own attention kernel (each part time-guarded)
# Further arguments go to the step's script (e.g. `study --seeds 1`; small sizes for a dry run on a CPU).
# A finished study/pairwise step only reports: delete runs/<step>.exit to run it again.
# JSON results and the study's results.md/json are written to $OUT (they come back with the call).
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=${KIT:-.carry/kit}
OUT=${OUT:-/tmp/gpu-session-out}
mkdir -p "$OUT"
[ -d "$KIT/encoder" ] || { echo "$KIT: missing (run python benchmarks/gpu_kit.py here and carry .carry)"; exit 2; }

python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/biomtl-site "$KIT"/wheels/*.whl
export PYTHONPATH="/tmp/biomtl-site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if [ ! -f /tmp/biomtl-tasks/hoc/manifest.json ]; then
  mkdir -p /tmp/biomtl-tasks && tar xzf "$KIT/tasks.tar.gz" -C /tmp/biomtl-tasks
fi
export BIOMTL_DATA=/tmp/biomtl-tasks BIOMTL_ENCODER="$PWD/$KIT/encoder" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false

# $1: the step; the study steps wait in the foreground for at most this many seconds per call.
WAIT_S=${WAIT_S:-540}
STUDY=configs/studies/blue-public.yaml

versions() {  # the GPU, the driver, and the software the step runs on
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"
  python3 -c "import torch, transformers, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
}

wait_for() {  # $1 name, $2 log, $3 done-marker file: wait up to WAIT_S, then report
  local start=$SECONDS
  while [ ! -f "$3" ] && [ $((SECONDS - start)) -lt "$WAIT_S" ]; do sleep 10; done
  tail -n 25 "$2"
  if [ -f "$3" ]; then echo "$1 finished (exit $(cat "$3"))"; else echo "$1 still running: call again"; fi
}

background() {  # $1 name, then the command: started once, in its own session, so that it outlives this call
  local name=$1; shift
  local log=runs/$name.log done=runs/$name.exit pid=runs/$name.pid
  mkdir -p runs
  if [ ! -f "$done" ] && ! { [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null; }; then
    setsid nohup bash -c "$(printf '%q ' "$@") >>$log 2>&1; echo \$? >$done" >/dev/null 2>&1 &
    echo $! >"$pid"
    sleep 2
  fi
  wait_for "$name" "$log" "$done"
}

case "${1:-}" in
  check)
    versions
    python3 -m pytest -q -x -p no:cacheprovider tests -m "not slow" 2>&1 | tee "$OUT/check.log" | tail -n 15
    python3 -m pytest -q -p no:cacheprovider tests/test_accelerated_paths.py -rs 2>&1 | tee -a "$OUT/check.log" | tail -n 8
    ;;
  train)
    # The issue's baseline: the stock recipe in fp32 at batch 32; biomtl in bf16 with a larger batch.
    python3 benchmarks/compare_training.py --epochs 10 --json-out "$OUT/training-gpu.json" \
      --biomtl-flags "--bf16 --batch-size ${BIOMTL_BATCH:-128} --lr ${BIOMTL_LR:-2e-4}" "${@:2}"
    python3 benchmarks/compare_training.py --epochs 10 --bf16 --json-out "$OUT/training-gpu-same-flags.json" "${@:2}"
    ;;
  mfu)
    python3 benchmarks/mfu.py --bf16 --steps 300 --warmup-steps 10 --json-out "$OUT/mfu-gpu-eager.json" \
      --trace "$OUT/mfu-trace.txt" "${@:2}"
    python3 benchmarks/mfu.py --bf16 --compile --steps 300 --warmup-steps 30 --json-out "$OUT/mfu-gpu.json" "${@:2}"
    ;;
  study)
    background study python3 benchmarks/study_time.py --profile full --output-dir runs/blue-public-full \
      --json-out runs/study-full-gpu.json "${@:2}"
    cp runs/blue-public-full/results.md "$OUT/" 2>/dev/null || true
    # in one file (a call brings back 8): results.json, the timing, the log and every finished run's scores,
    # also while the study is still running
    { find runs/blue-public-full \( -name result.json -o -name metrics.jsonl -o -name results.json \) -print0
      printf '%s\0' runs/study-full-gpu.json runs/study.log; } 2>/dev/null \
      | tar czf "$OUT/study-runs.tar.gz" --null --ignore-failed-read -T - 2>/dev/null || true
    ;;
  brief)
    # A 15-minute lease: this call (BRIEF_S, ~9 min), then `study --seeds 1` at once, while the machine is warm.
    # Versions; the training step of the study's encoder shape with its operator trace (113 ms with torch's
    # attention kernel on 2026-11-30, 6 ms of it on the device: does biomtl's kernel choice fix it?); then one
    # seed of the full study in the background (25,123 steps). The training ratio and the BERT-base MFU were
    # measured on 2026-11-30 (before that choice): `train` and `mfu` measure them again.
    # Further arguments go to the study (small sizes for a dry run on a CPU).
    BRIEF_S=${BRIEF_S:-540}
    {
      versions
      timeout -k 5 150 python3 benchmarks/mfu.py --shape embedded --bf16 --steps "${MFU_STEPS:-100}" --warmup-steps 10 \
        --json-out "$OUT/mfu-gpu-embedded.json" --trace "$OUT/mfu-trace-embedded.txt" || echo "mfu.py: exit $?"
    } 2>&1 | tee "$OUT/brief.log"
    WAIT_S=$((BRIEF_S - SECONDS > 10 ? BRIEF_S - SECONDS : 10)) bash "$PWD/benchmarks/gpu_session.sh" study --seeds 1 "${@:2}"
    ;;
  ratio)
    # The 2026-11-30 lease's call (~9 min): the MFU of BERT-base and of the embedded shape with operator traces,
    # the training ratio (`train`'s first half), the step with torch's own attention kernel, `train`'s second
    # half. Each part starts only if BRIEF_S leaves it the seconds it needs, and is cut at BRIEF_S. Further
    # arguments go to compare_training.py (small sizes for a dry run on a CPU).
    BRIEF_S=${BRIEF_S:-540}
    MFU_STEPS=${MFU_STEPS:-100}
    part() {  # $1: the seconds the part needs at least; then the command
      local need=$1 left=$((BRIEF_S - SECONDS)); shift
      if [ "$left" -lt "$need" ]; then echo "== skipped, ${left} s left of ${need}: $*"; return 0; fi
      echo "== ${left} s left: $*"
      timeout -k 5 "$left" "$@" || echo "== exit $?: $*"
    }
    {
      versions
      part 45 python3 benchmarks/mfu.py --bf16 --steps "$MFU_STEPS" --warmup-steps 10 \
        --json-out "$OUT/mfu-gpu-eager.json" --trace "$OUT/mfu-trace.txt"
      part 45 python3 benchmarks/mfu.py --shape embedded --bf16 --steps "$MFU_STEPS" --warmup-steps 10 \
        --json-out "$OUT/mfu-gpu-embedded.json" --trace "$OUT/mfu-trace-embedded.txt"
      part 150 python3 benchmarks/compare_training.py --epochs 10 --json-out "$OUT/training-gpu.json" \
        --biomtl-flags "--bf16 --batch-size ${BIOMTL_BATCH:-128} --lr ${BIOMTL_LR:-2e-4}" "${@:2}"
      part 40 python3 benchmarks/mfu.py --bf16 --steps 50 --warmup-steps 10 --sdpa torch
      part 150 python3 benchmarks/compare_training.py --epochs 10 --bf16 \
        --json-out "$OUT/training-gpu-same-flags.json" "${@:2}"
    } 2>&1 | tee "$OUT/ratio.log"
    ;;
  pairwise)
    background pairwise python3 -m biomtl pairwise "$STUDY" --profile full --quiet "${@:2}"
    cp runs/blue-public-full/pairwise.{md,json,png} "$OUT/" 2>/dev/null || true
    ;;
  *)
    echo "usage: bash benchmarks/gpu_session.sh check|brief|ratio|train|mfu|study|pairwise"; exit 2 ;;
esac
