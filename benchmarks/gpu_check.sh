#!/usr/bin/env bash
# One-shot GPU check of lstm_jax's cuDNN path: a smoke test of cuDNN against the scan, the GPU tests,
# and the benchmark at three shapes against torch and Flax. Every result goes under $OUT.
#
#   bash benchmarks/gpu_check.sh              # on a CUDA machine (no network needed if jax[cuda] is installed)
#   bash benchmarks/gpu_check.sh --dry-run    # rehearsal on a CPU: jax's pure lstm_ref stands in for cuDNN
#
# OUT defaults to benchmarks/gpu_check_out/ (beside this script). PYTHON defaults to python3.
# Each stage has a time limit so that the whole check ends within 8 minutes; a failed stage is
# recorded in $OUT/summary.txt and the next one still runs. The exit status is 0 only if all passed.
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,10p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "error: unknown argument $arg (use --dry-run or nothing)" >&2; exit 2 ;;
  esac
done
OUT="${OUT:-$HERE/gpu_check_out}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT" || { echo "error: cannot create $OUT" >&2; exit 2; }
: > "$OUT/summary.txt"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# Several JAX processes (and torch) share one GPU here: none may grab it whole at start-up.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export LSTM_JAX_COMPILATION_CACHE=0
START=$(date +%s)
STATUS=0

record() {  # record NAME RC
  local verdict=passed
  [ "$2" -eq 0 ] || { verdict="FAILED (exit $2)"; STATUS=1; }
  echo "$1: $verdict ($(( $(date +%s) - START )) s since start)" | tee -a "$OUT/summary.txt"
}

if [ "$DRY" -eq 1 ]; then
  export JAX_PLATFORMS=cpu
  MODE=dry-run
else
  MODE=gpu
  if ! "$PY" -c "import jax; assert jax.default_backend() == 'gpu'" 2>/dev/null; then
    echo "no CUDA jax found; trying pip install 'jax[cuda12]'" | tee -a "$OUT/summary.txt"
    "$PY" -m pip install -q 'jax[cuda12]' >"$OUT/pip.log" 2>&1
    if ! "$PY" -c "import jax; assert jax.default_backend() == 'gpu'" 2>/dev/null; then
      echo "error: no CUDA jax here and none could be installed (see $OUT/pip.log)" | tee -a "$OUT/summary.txt" >&2
      exit 2
    fi
  fi
fi
echo "mode: $MODE; python: $("$PY" -c 'import sys; print(sys.version.split()[0])'); out: $OUT" | tee -a "$OUT/summary.txt"
"$PY" - >"$OUT/environment.txt" 2>&1 <<'PYEOF'
import jax
print("jax", jax.__version__, "backend", jax.default_backend(), "devices", jax.devices())
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.cuda.is_available())
except ImportError:
    print("torch not installed")
PYEOF

# 1. Smoke test: cuDNN (or, dry, its pure reference) against the scan, forward and every gradient.
DRY_RUN=$DRY timeout 90 "$PY" - >"$OUT/smoke.txt" 2>&1 <<'PYEOF'
import json, os, sys
sys.path.insert(0, "tests")
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from lstm_jax.nn.layers import LSTM
if os.environ["DRY_RUN"] == "1":
    import cudnn_fake
    cudnn_fake.install(setattr)
B, T, D, H = 16, 37, 7, 32
k = jax.random.split(jax.random.key(0), 3)
x = jax.random.normal(k[0], (B, T, D))
lengths = jax.random.randint(k[1], (B,), 0, T + 1)
carry = (jax.random.normal(k[2], (B, H)), jax.random.normal(k[2], (B, H)) * 0.5)
def run(impl, reverse):
    layer = LSTM(D, H, impl=impl, reverse=reverse, rngs=nnx.Rngs(0))
    g, p = nnx.split(layer)
    def loss(p, x, carry):
        out, (c, h) = nnx.merge(g, p)(x, lengths, carry, return_carry=True)
        return jnp.sum(jnp.sin(out)) + jnp.sum(c * h), out
    return layer.impl, jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(p, x, carry)
report = {}
for precision in ("highest", None):
    for reverse in (False, True):
        ctx = jax.default_matmul_precision(precision) if precision else jax.default_matmul_precision("tensorfloat32")
        with ctx:
            impl, got = run("auto", reverse)
            _, ref = run("scan", reverse)
        err = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) / max(1.0, float(np.max(np.abs(np.asarray(b)))))
                  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)))
        tol = 1e-5 if precision == "highest" else 2e-2  # TF32 keeps 10 mantissa bits
        report[f"{precision or 'tf32'} reverse={reverse}"] = {"impl": impl, "max_rel_err": err, "tol": tol}
        assert impl == "cudnn", impl
        assert err <= tol, (precision, reverse, err)
print(json.dumps(report, indent=1))
print("smoke: cuDNN path matches the scan")
PYEOF
record "smoke (cuDNN vs scan)" $?

# 2. The tests that exercise cuDNN and the GPU (on a CPU the GPU-only ones skip).
timeout 220 "$PY" -m pytest -q -p no:cacheprovider tests/test_cudnn.py tests/test_fast.py \
  -k "cudnn or gpu" --junitxml="$OUT/tests.xml" >"$OUT/tests.txt" 2>&1
record "tests (test_cudnn.py, test_fast.py -k 'cudnn or gpu')" $?

# 3. The benchmark against torch and Flax.
if [ "$DRY" -eq 1 ]; then
  SHAPES=8x10x3x16,16x20x4x32; ROUNDS=2; IMPLS=lstm_jax:scan,lstm_jax:xla,lstm_jax:native,flax_nnx,torch
else
  SHAPES=64x100x8x128,128x100x32x256,256x200x64x512; ROUNDS=10
  IMPLS=lstm_jax:cudnn,lstm_jax:xla,lstm_jax:scan,flax_nnx,torch
fi
timeout 150 "$PY" -m benchmarks.benchmark --shapes=$SHAPES --impls=$IMPLS --modes=train --rounds=$ROUNDS --warmup=1 \
  --out="$OUT/benchmark" --note="benchmarks/gpu_check.sh ($MODE)" >"$OUT/benchmark.txt" 2>&1
record "benchmark ($SHAPES)" $?

echo "total: $(( $(date +%s) - START )) s; results in $OUT" | tee -a "$OUT/summary.txt"
exit $STATUS
