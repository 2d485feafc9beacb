#!/usr/bin/env bash
# The device check (issue 37; docs/scaling.md, "GPU: the device check"): on the GPU machine,
# which has JAX and no TensorFlow, Keras, pydantic, orjson or Dask, install the wheels of
# `make device-wheels` (.whl/) and measure, each step bounded in time, 8 minutes in all:
#   - the speed benchmark's fused search on digits, 40 x 20 and 200 x 20 candidates, on the
#     GPU and on the same machine's CPU (JAX_PLATFORMS=cpu), for the ratio;
#   - one fused chunk of 40 and of 64 candidates (a search's largest by default): first epoch with
#     the trace, later epochs, peak device memory;
#   - a 20-trial run_nas search with the worker-process executor, its result checked;
#   - mixed precision on (the 40 x 20 GPU row is the same search with it off).
# Writes the Markdown table to $OUT/device.md (OUT defaults to ./device_out).
#
#   benchmarks/device_check.sh             # on the GPU machine, with .whl/ beside it
#   benchmarks/device_check.sh --dry-run   # here: the same steps, tiny, on CPU, installing nothing
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY=0 ONLY=""
while (($#)); do
  case $1 in
    --dry-run) DRY=1 ;;
    --only) ONLY=",$2,"; shift ;;  # these steps (comma-separated names); the others get a "not run" row
    *) echo "usage: $0 [--dry-run] [--only step,step...]" >&2; exit 2 ;;
  esac
  shift
done
OUT="${OUT:-./device_out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/steps.jsonl"
rm -f "$LOG" "$OUT/device.md"
touch "$LOG"
TOTAL_S="${DEVICE_CHECK_TOTAL_S:-480}"
START=$SECONDS
STEPS="$ROOT/benchmarks/device_steps.py"
# GPU memory taken as needed, as a search does by default (search/device.py), so peak
# memory is what a chunk used and the worker process finds room beside its caller.
export KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false

if [[ $DRY == 1 ]]; then
  PY="${PYTHON:-$ROOT/.venv/bin/python}"
  [[ -x "$PY" ]] || PY=python3
  export JAX_PLATFORMS=cpu
  # As on the GPU machine, TensorFlow cannot be imported (Keras imports it, when it can,
  # even on JAX): every Python started here refuses it (tests/test_no_tensorflow.py's hook).
  mkdir -p "$OUT/no-tensorflow"
  cat >"$OUT/no-tensorflow/sitecustomize.py" <<'PYEOF'
import sys


class RefuseTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ImportError(f"No module named {name!r} (device_check.sh --dry-run)", name=name)


sys.meta_path.insert(0, RefuseTensorFlow())
PYEOF
  export PYTHONPATH="$OUT/no-tensorflow:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  S40=4 S200=8 EPOCHS=2 CHUNKS="4 6" CHUNK_EPOCHS=2 TRIALS=2 TRIAL_EPOCHS=1 EXTRA="--tiny" WORKERS="--workers 1"
  NOTE="Dry run (--dry-run): every step tiny (a one-unit search space), on this machine's CPU, TensorFlow refused; the figures mean nothing."
else
  PY="${PYTHON:-python3}"
  SITE="${TMPDIR:-/tmp}/site"
  shopt -s nullglob
  wheels=("$ROOT"/.whl/*.whl)
  [[ ${#wheels[@]} -gt 0 ]] || { echo "device_check: no wheels in $ROOT/.whl (run make device-wheels here first)" >&2; exit 2; }
  # What the machine already has stays as it is (a newer copy on PYTHONPATH would shadow it),
  # except what must match this package and each other.
  keep=$("$PY" - "${wheels[@]}" <<'PYEOF'
import importlib.metadata as m, os, re, sys
always = {"keras", "pydantic", "pydantic-core", "typing-extensions", "typing-inspection", "annotated-types",
          "orjson", "dask", "distributed", "cerebros-service"}
for path in sys.argv[1:]:
    name = re.sub(r"[-_.]+", "-", os.path.basename(path).split("-")[0]).lower()
    try:
        have = m.version(name)
    except m.PackageNotFoundError:
        have = None
    if name in always or have is None:
        print(path)
    else:
        print(f"device_check: keeping the installed {name} {have}", file=sys.stderr)
PYEOF
)
  rm -rf "$SITE"
  # shellcheck disable=SC2086
  "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" $keep || { echo "device_check: wheel install failed" >&2; exit 2; }
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  S40=40 S200=200 EPOCHS=20 CHUNKS="40 64" CHUNK_EPOCHS=5 TRIALS=20 TRIAL_EPOCHS=5 EXTRA="" WORKERS=""
  NOTE="Keras $("$PY" -c 'import keras; print(keras.__version__)' 2>/dev/null), JAX $("$PY" -c 'import jax; print(jax.__version__)' 2>/dev/null), Python $("$PY" -c 'import platform; print(platform.python_version())')."
fi

echo "== device"
GPU=""
if command -v nvidia-smi >/dev/null; then
  GPU="$(nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader 2>&1 | head -n 4)"
  echo "$GPU"
fi
"$PY" -c 'import jax; print("jax.devices():", jax.devices())' 2>&1 | tail -n 1
NOTE="$NOTE${GPU:+ nvidia-smi: $GPU.} Steps bounded by timeout, ${TOTAL_S} s in all."

# step NAME CAP_S "WORK" ENV KIND [ARGS...]: one step in its own process, with the environment
# setting ENV ("-": none), within CAP_S seconds and what is left of the total.
step() {
  local name=$1 cap=$2 work=$3 setting=$4 kind=$5
  shift 5
  [[ $setting == - ]] && setting="KERAS_BACKEND=jax"
  if [[ -n $ONLY && $ONLY != *",$name,"* ]]; then
    "$PY" "$STEPS" failed --log "$LOG" --step "$name" --work "$work" --error "not run (--only)"
    return
  fi
  local left=$((TOTAL_S - (SECONDS - START) - 10))  # timeout's -k 10 and the table
  local limit=$((cap < left ? cap : left))
  if ((limit < 10)); then
    "$PY" "$STEPS" failed --log "$LOG" --step "$name" --work "$work" --error "not run: the ${TOTAL_S} s were spent"
    return
  fi
  local before
  before=$(wc -l <"$LOG")
  echo "== $name ($work; at most ${limit} s)"
  # shellcheck disable=SC2086
  env "$setting" timeout -k 10 "$limit" "$PY" "$STEPS" "$kind" --log "$LOG" --step "$name" --work "$work" "$@" \
    $EXTRA 2>"$OUT/$name.err"
  local rc=$?
  local after
  after=$(wc -l <"$LOG")
  if ((rc != 0)); then
    tail -n 5 "$OUT/$name.err" >&2
    if ((after == before)); then
      local why="exit $rc"
      ((rc == 124 || rc == 137)) && why="timed out after ${limit} s"
      "$PY" "$STEPS" failed --log "$LOG" --step "$name" --work "$work" --error "$why"
    fi
  fi
}

CPU="JAX_PLATFORMS=cpu"
set -- $CHUNKS
# Most wanted first: a step's cap is its own bound, the total cuts whatever comes last.
step "speed-40" 90 "digits $S40 x $EPOCHS, fused" - speed --trials "$S40" --epochs "$EPOCHS"
step "speed-200" 120 "digits $S200 x $EPOCHS, fused" - speed --trials "$S200" --epochs "$EPOCHS"
step "speed-200-cpu" 150 "digits $S200 x $EPOCHS, fused" "$CPU" speed --trials "$S200" --epochs "$EPOCHS"
step "chunk-$1" 60 "one fused chunk of $1, $CHUNK_EPOCHS epochs" - chunk --candidates "$1" --epochs "$CHUNK_EPOCHS"
step "chunk-$2" 60 "one fused chunk of $2, $CHUNK_EPOCHS epochs" - chunk --candidates "$2" --epochs "$CHUNK_EPOCHS"
# shellcheck disable=SC2086
step "processes" 120 "run_nas, $TRIALS trials x $TRIAL_EPOCHS epochs, executor processes" - processes --trials "$TRIALS" --epochs "$TRIAL_EPOCHS" $WORKERS
step "mixed-40" 90 "digits $S40 x $EPOCHS, fused, mixed precision on" - speed --trials "$S40" --epochs "$EPOCHS" --mixed
step "speed-40-cpu" 90 "digits $S40 x $EPOCHS, fused" "$CPU" speed --trials "$S40" --epochs "$EPOCHS"

"$PY" "$STEPS" table --log "$LOG" --md "$OUT/device.md" --note "$NOTE"
echo "device_check: wrote $OUT/device.md in $((SECONDS - START)) s"
