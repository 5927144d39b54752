#!/usr/bin/env bash
# One command for a lent GPU machine (cold, offline): find a Python with torch, install the
# project, then run scripts/device_check.py, which writes $OUT/device_check.{md,json}.
#
#   bash scripts/device_check.sh            # CUDA, 480 s budget
#   bash scripts/device_check.sh --cpu      # CPU smoke run, 180 s budget (what CI runs)
#
# Environment: OUT (default ./device-check-out), BUDGET (seconds, default 480 / 180 with
# --cpu), PYTHON (tried first), WHEELHOUSE (a folder of wheels for offline installs of
# missing dependencies; default ./wheelhouse), DEVICE_CHECK_SKIP_INSTALL=1 (use the checkout
# as it is). Install problems never stop the run: they are logged to $OUT/install.log and
# reported in device_check.md. Any further arguments go to device_check.py.
set -u
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2
OUT="${OUT:-./device-check-out}"
mkdir -p "$OUT" || exit 2
LOG="$OUT/install.log"
: >"$LOG"
note() { echo "[device_check] $*" | tee -a "$LOG" >&2; }

cpu=0
for a in "$@"; do [ "$a" = "--cpu" ] && cpu=1; done
BUDGET="${BUDGET:-$([ "$cpu" = 1 ] && echo 180 || echo 480)}"
WHEELHOUSE="${WHEELHOUSE:-$REPO/wheelhouse}"

# ---- (a) a Python with torch
has_torch() { "$1" -c "import torch" >/dev/null 2>&1; }
candidates=()
[ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
candidates+=(python3 python)
PY=""
for c in "${candidates[@]}"; do
  if command -v "$c" >/dev/null 2>&1 && has_torch "$c"; then PY="$c"; break; fi
done
if [ -z "$PY" ]; then
  for c in "${candidates[@]}"; do command -v "$c" >/dev/null 2>&1 && { PY="$c"; break; }; done
  [ -z "$PY" ] && { note "FATAL: no python3/python on PATH"; exit 2; }
  note "no Python with torch; trying: $PY -m pip install torch==2.13.0"
  if timeout 400 "$PY" -m pip install -q --disable-pip-version-check --retries 0 --timeout 10 \
      torch==2.13.0 >>"$LOG" 2>&1 && has_torch "$PY"; then
    note "torch installed"
  else
    note "PROBLEM: torch could not be installed (offline?); the report will say what failed"
  fi
fi
note "python: $(command -v "$PY") ($("$PY" -c 'import sys; print(sys.version.split()[0])' 2>&1)), torch: $("$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -n 1)"

# ---- the project
pipq() { timeout 300 "$PY" -m pip install -q --disable-pip-version-check --retries 0 --timeout 10 "$@" >>"$LOG" 2>&1; }
missing_deps() {
  "$PY" -c "import importlib.util as u; print(' '.join(m for m in ('torch_geometric', 'safetensors', 'tqdm', 'huggingface_hub') if u.find_spec(m) is None))" 2>/dev/null
}
installed_here() {  # importable from outside the checkout, and from this checkout
  (cd / && "$PY" -c "import gnnopt, sys; sys.exit(0 if gnnopt.__file__.startswith('$REPO/') else 1)") >/dev/null 2>&1
}
if [ "${DEVICE_CHECK_SKIP_INSTALL:-0}" = 1 ]; then
  note "project install skipped (DEVICE_CHECK_SKIP_INSTALL=1)"
elif installed_here; then
  note "gnnopt already installed from $REPO"
else
  missing="$(missing_deps)"
  if [ -n "$missing" ] && [ -d "$WHEELHOUSE" ]; then
    note "missing dependencies: $missing; installing them from $WHEELHOUSE"
    # shellcheck disable=SC2086
    pipq --no-index --find-links "$WHEELHOUSE" $missing || note "PROBLEM: wheelhouse install failed"
    missing="$(missing_deps)"
  fi
  if [ -z "$missing" ]; then
    { pipq -e . --no-deps --no-build-isolation || pipq -e . --no-deps; } && note "installed: pip install -e . --no-deps" \
      || note "PROBLEM: pip install -e . --no-deps failed (see install.log); using the checkout via PYTHONPATH"
  else
    note "missing dependencies: $missing; trying pip install -e . (needs the network)"
    { pipq -e . || pipq .; } && note "installed with dependencies" \
      || note "PROBLEM: install failed, still missing: $(missing_deps) (see install.log); using the checkout via PYTHONPATH"
  fi
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # the checkout is importable whatever happened above

# ---- (b) the checks
export DEVICE_CHECK_INSTALL_LOG="$LOG"
"$PY" scripts/device_check.py --out "$OUT" --budget "$BUDGET" "$@"
rc=$?
note "device_check.py exit $rc; report: $OUT/device_check.md"
exit $rc
