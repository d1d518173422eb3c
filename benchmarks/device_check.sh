#!/usr/bin/env bash
# Device check on a lent GPU machine (one H200): finds a Python whose JAX has a GPU backend, prints
# the backend and devices, then runs benchmarks/device_check.py (7-minute limit), which prints ONE
# JSON object and, with $OUT set, writes $OUT/device_check.json (rewritten after each section, so a
# run cut short still returns what it measured). The figures are described in device_check.py.
#
#     bash benchmarks/device_check.sh        # from any directory; at most ~8 minutes in all
#     bash benchmarks/device_check.sh --small   # arguments go to device_check.py (a GPU is still required)
#
# The machine has no network. The repository is put on PYTHONPATH (no `pip install -e .` needed).
# Python: the first of .venv/bin/python, python3 whose `jax.default_backend()` is "gpu". The check
# needs jax, flax, optax, numpy and ml_collections; wheels carried in .whl/ (made beforehand with
# network: `python3 -m pip download --no-deps --only-binary=:all: -d .whl ml-collections==1.1.0`,
# a pure-Python wheel; the run names ".whl" in carry) are installed to /tmp/device_check_site
# first. Only when something is missing is pip tried against the index, with short timeouts;
# without a network it fails, and the script exits non-zero saying what is missing.
#
# Exit status: 0 done; 2 no GPU backend; 3 a Python package missing; else device_check.py's
# (124: it ran past its 7 minutes; the JSON in $OUT then holds the sections it finished).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
MODULES="jax flax optax numpy ml_collections"
PIP_QUICK="--retries 1 --timeout 10"

fail() {  # fail STATUS MESSAGE: print it, leave it in $OUT/device_check.json, exit
  echo "device_check: FAILED: $2" >&2
  if [ -n "${OUT:-}" ]; then
    printf '{"error": "%s"}\n' "$(echo "$2" | sed 's/\\/\\\\/g; s/"/\\"/g')" >"$OUT/device_check.json"
  fi
  exit "$1"
}

has_gpu_jax() {  # has_gpu_jax PYTHON
  timeout 120 "$1" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' >/dev/null 2>&1
}

missing_modules() {  # missing_modules PYTHON: prints the modules of $MODULES it cannot import
  timeout 120 "$1" -c 'import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))' $MODULES
}

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/device_check_site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/device_check_site" || echo "device_check: installing .whl/ failed" >&2
fi

PYTHON=""
for candidate in "$PWD/.venv/bin/python" "$(command -v python3)"; do
  if [ -x "$candidate" ] && has_gpu_jax "$candidate"; then PYTHON="$candidate"; break; fi
done
if [ -z "$PYTHON" ]; then
  echo "device_check: no Python with a GPU JAX backend; trying pip install -e '.[cuda]' (needs a network)" >&2
  timeout 150 python3 -m pip install -q $PIP_QUICK -e ".[cuda]" >&2 && has_gpu_jax python3 && PYTHON="$(command -v python3)"
fi
[ -n "$PYTHON" ] || fail 2 "no GPU backend: jax.default_backend() is not 'gpu' for .venv/bin/python or python3, and pip install -e '.[cuda]' failed (no network?)"

missing="$(missing_modules "$PYTHON")"
if [ -n "$missing" ]; then
  echo "device_check: $PYTHON lacks: $missing; trying pip (needs a network)" >&2
  timeout 90 "$PYTHON" -m pip install -q $PIP_QUICK $(echo "$missing" | tr _ -) >&2
  missing="$(missing_modules "$PYTHON")"
  [ -z "$missing" ] || fail 3 "Python packages missing: $missing (carry them as wheels in .whl/, see benchmarks/device_check.sh)"
fi

echo "device_check: python $PYTHON"
"$PYTHON" -c 'import jax; print("jax", jax.__version__, "backend", jax.default_backend(), "devices", jax.devices())'
command -v nvidia-smi >/dev/null && nvidia-smi -L
timeout 420 "$PYTHON" benchmarks/device_check.py "$@"
status=$?
[ "$status" -eq 124 ] && echo "device_check: device_check.py ran past 7 minutes; \$OUT/device_check.json holds the finished sections" >&2
exit "$status"
