#!/usr/bin/env bash
# One prepared GPU session (issues #12 section 6 and #9 section 6), for one device call of about 8 minutes:
#
#   1. benchmarks/gpu_check.py: exact search at the bandwidth floor, indexing throughput (pig-vit-b-32, bf16),
#      the efficiency benchmark on the GPU (PIG / Two-Tower / X-Pool at N = 1k..10M, PIG-M per M), training
#      step and one evaluation pass; parts that no longer fit its budget are skipped, each finished part is
#      written at once;
#   2. when this checkout has it (feature-detected from `hybridtower reproduce synthetic --help`), the
#      GPU-sized comparison `hybridtower reproduce synthetic --kind scenes-bold --scale gpu`, in the time left.
#
# Everything lands in $OUT (at most 8 files come back from a device call; this writes at most 6):
#   session.log, gpu_check.json, gpu_check-efficiency.json, gpu_check-efficiency.md, comparison.md, comparison.json
#
# Usage:
#   bash scripts/gpu_session.sh --wheels     # HERE, once, before the device call: fetch the wheels the device's
#                                            # image lacks (PyAV, open_clip, ftfy, wcwidth; ~38 MB) into .whl/
#   then the device call:  run(command="bash scripts/gpu_session.sh", carry=[".whl"], timeout_s=560)
#   bash scripts/gpu_session.sh --rehearse   # HERE: the same sequence on the CPU at rehearsal sizes (tiny model),
#                                            # the reproduce step printed, not run
#
# Time caps (seconds; environment): TOTAL_S (default 470: the whole script, inside an 8-minute call),
# GPU_CHECK_S (default TOTAL_S / 2 = 235 when the comparison will run, else TOTAL_S - 20: gpu_check's own budget; its hard
# stop is 30 s later). The comparison gets what is left, minus 10 s for copying.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=run
case "${1:-}" in
  --wheels) MODE=wheels ;;
  --rehearse) MODE=rehearse ;;
  ""|--run) ;;
  -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
  *) echo "usage: bash scripts/gpu_session.sh [--wheels | --rehearse]" >&2; exit 2 ;;
esac
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi

if [ "$MODE" = wheels ]; then
  # Versions pinned to what this checkout's environment runs (the tests pass with them).
  pins=$("$PY" - <<'EOF'
import importlib.metadata as m
print(" ".join(f"{d}=={m.version(d)}" for d in ("av", "open_clip_torch", "ftfy", "wcwidth")))
EOF
  ) || { echo "error: cannot read the installed versions of av/open_clip_torch/ftfy/wcwidth" >&2; exit 1; }
  exclude=$(git rev-parse --git-path info/exclude)
  grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
  mkdir -p .whl
  # shellcheck disable=SC2086
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $pins || exit 1
  ls -la .whl
  echo "wheels: $(du -sm .whl | cut -f1) MB for $pins (the working tree plus carried paths must stay under 64 MiB)"
  exit 0
fi

START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
if [ "$MODE" = rehearse ]; then
  OUT=${OUT:-$ROOT/runs/gpu-session-rehearsal}
else
  OUT=${OUT:-$ROOT/runs/gpu-session}
fi
mkdir -p "$OUT"
LOG=$OUT/session.log
: > "$LOG"
say() { echo "[$(elapsed) s] $*" | tee -a "$LOG"; }
TOTAL_S=${TOTAL_S:-470}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-session.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- environment: the device image has torch but not PyAV / open_clip; they travel as wheels in .whl
SITE=""
if [ "$MODE" = run ] && ls .whl/*.whl >/dev/null 2>&1; then
  SITE=$WORK/site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    >>"$LOG" 2>&1 || say "warning: installing the wheels from .whl failed (see above)"
fi
export PYTHONPATH="$ROOT/src${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
HT=("$PY" -m hybridtower.cli.main)
if ! "$PY" -c "import torch, av, open_clip, hybridtower.hub" >>"$LOG" 2>&1; then
  say "error: cannot import torch / av / open_clip / hybridtower with $PY (run 'bash scripts/gpu_session.sh --wheels' here first and carry .whl)"
  exit 3
fi
say "python: $("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available())')"
if [ "$MODE" = run ]; then
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >>"$LOG" 2>&1
  df -h /dev/shm "${TMPDIR:-/tmp}" >>"$LOG" 2>&1
fi

# --- feature-detect the GPU-sized comparison preset
REPRO=0
REPRO_ARGS=(reproduce synthetic --kind scenes-bold --scale gpu --out-dir "$WORK/repro" --no-progress)
help=$("${HT[@]}" reproduce synthetic --help 2>/dev/null || true)
if grep -q -- '--scale' <<<"$help" && grep -q 'gpu' <<<"$help"; then
  REPRO=1
  if grep -q -- '--device' <<<"$help"; then REPRO_ARGS+=(--device "$([ "$MODE" = run ] && echo cuda || echo cpu)"); fi
  say "comparison preset found: hybridtower ${REPRO_ARGS[*]}"
else
  say "no '--scale gpu' in 'hybridtower reproduce synthetic --help': the comparison step is skipped"
fi

# --- 1. gpu_check
if [ "$MODE" = rehearse ]; then
  CHECK_ARGS=(--device cpu --model-size tiny --frameworks pig --eff-m-values 1,2)
  GPU_CHECK_S=${GPU_CHECK_S:-$TOTAL_S}
else
  CHECK_ARGS=()
  if [ "$REPRO" = 1 ]; then GPU_CHECK_S=${GPU_CHECK_S:-$((TOTAL_S / 2))}; else GPU_CHECK_S=${GPU_CHECK_S:-$((TOTAL_S - 20))}; fi
fi
say "gpu_check: budget ${GPU_CHECK_S} s (hard stop $((GPU_CHECK_S + 30)) s)"
timeout -s TERM -k 15 $((GPU_CHECK_S + 30)) "$PY" -u benchmarks/gpu_check.py "${CHECK_ARGS[@]}" \
    --budget-s "$GPU_CHECK_S" --work-dir "$WORK/check" --out "$OUT/gpu_check.json" >>"$LOG" 2>&1
rc=$?
say "gpu_check exit code $rc (0 ok, 1 a part failed, 124 stopped by its time limit: finished parts are in gpu_check.json)"

# --- 2. the GPU-sized comparison, in the time left
if [ "$REPRO" = 1 ]; then
  left=$(( TOTAL_S - $(elapsed) - 10 ))
  if [ "$MODE" = rehearse ]; then
    say "rehearsal: would run 'hybridtower ${REPRO_ARGS[*]}' with ${left} s"
  elif [ "$left" -lt 60 ]; then
    say "comparison skipped: only ${left} s left"
  else
    say "comparison: ${left} s"
    timeout -s TERM -k 10 "$left" "${HT[@]}" "${REPRO_ARGS[@]}" >>"$LOG" 2>&1
    say "comparison exit code $? (124: stopped by the time cap)"
    for f in comparison.md comparison.json; do
      [ -f "$WORK/repro/$f" ] && cp "$WORK/repro/$f" "$OUT/$f"
    done
  fi
fi
say "done in $(elapsed) s; files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
