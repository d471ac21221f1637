#!/usr/bin/env bash
# `python -m experiments.forecast` (its defaults) against the Keras seed program it reproduces
# (benchmarks/keras_sine_seed.py), each timed as a whole command, start-up included: wall clock,
# one first run each, then ROUNDS rounds with the two alternating. Writes
# benchmarks/forecast_vs_keras.md with the medians, each side's validation MSE and the ratio.
# lstm_jax keeps compiled programs in a persistent cache (LSTM_JAX_COMPILATION_CACHE); here it is a
# fresh folder, so its first run is a cold start (compiling everything) and the rounds are warm,
# as every run after a user's first is. Keras keeps no such cache.
#
#   benchmarks/forecast_vs_keras.sh [ROUNDS]        # default 5
#
# LSTM_JAX_PYTHON  interpreter with lstm_jax installed (default: .venv/bin/python, which
#                  ./launch.sh sets up when missing).
# KERAS_PYTHON     interpreter with keras and jax (default: /tmp/venv-keras/bin/python, created
#                  when missing with `python3 -m venv /tmp/venv-keras && pip install keras jax`).
# Both commands run in scratch folders, so the lstm_jax run's default workdir lands there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
rounds=${1:-5}
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [ROUNDS]" >&2; exit 2; }

scratch=$(mktemp -d "${TMPDIR:-/tmp}/forecast_vs_keras.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

if [[ -z "${LSTM_JAX_PYTHON:-}" ]]; then
  LSTM_JAX_COMPILATION_CACHE=0 ./launch.sh forecast --epochs=1 --workdir="$scratch/setup" >/dev/null
  LSTM_JAX_PYTHON=$repo/.venv/bin/python
fi
if [[ -z "${KERAS_PYTHON:-}" ]]; then
  KERAS_PYTHON=/tmp/venv-keras/bin/python
  if ! KERAS_BACKEND=jax "$KERAS_PYTHON" -c 'import keras, jax' 2>/dev/null; then
    echo "creating /tmp/venv-keras (pip install keras jax)" >&2
    python3 -m venv /tmp/venv-keras
    /tmp/venv-keras/bin/python -m pip install --quiet keras jax
  fi
fi

lstm_cmd="python -m experiments.forecast"
keras_cmd="KERAS_BACKEND=jax python benchmarks/keras_sine_seed.py"

# run NAME ROUND: runs one side in its own scratch folder; prints its wall seconds.
run() {
  local dir=$scratch/$1-$2 t0 t1
  mkdir -p "$dir"
  t0=$EPOCHREALTIME
  if [[ $1 == lstm_jax ]]; then
    (cd "$dir" && LSTM_JAX_COMPILATION_CACHE=$scratch/xla PYTHONPATH=$repo "$LSTM_JAX_PYTHON" -m experiments.forecast >out.log 2>&1)
  else
    (cd "$dir" && KERAS_BACKEND=jax "$KERAS_PYTHON" "$repo/benchmarks/keras_sine_seed.py" >out.log 2>&1)
  fi
  t1=$EPOCHREALTIME
  echo "$t0 $t1" | awk '{printf "%.3f\n", $2 - $1}'
}

lstm_first=$(run lstm_jax first)
keras_first=$(run keras first)
echo "first runs: lstm_jax ${lstm_first}s (empty compilation cache), keras ${keras_first}s" >&2

load_before=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
lstm_times=() keras_times=() lstm_mse=() keras_mse=() lstm_fit=()
for ((i = 1; i <= rounds; i++)); do
  # Alternate which side goes first, so neither always runs on the heels of the other.
  if ((i % 2)); then order="lstm_jax keras"; else order="keras lstm_jax"; fi
  for side in $order; do
    t=$(run "$side" "$i")
    if [[ $side == lstm_jax ]]; then
      lstm_times+=("$t")
      read -r mse fit < <("$LSTM_JAX_PYTHON" -c 'import glob, json, sys
s = json.load(open(glob.glob(sys.argv[1] + "/runs/*/summary.json")[0]))
print(s["val_mse"], s["wall_seconds"])' "$scratch/$side-$i")
      lstm_mse+=("$mse") lstm_fit+=("$fit")
    else
      keras_times+=("$t")
      keras_mse+=("$(sed -n 's/^final val_loss: //p' "$scratch/$side-$i/out.log")")
    fi
    echo "round $i  $side  ${t}s" >&2
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")

export LSTM_FIRST=$lstm_first KERAS_FIRST=$keras_first RESULT_ROUNDS=$rounds LSTM_CMD=$lstm_cmd KERAS_CMD=$keras_cmd
export LSTM_TIMES="${lstm_times[*]}" KERAS_TIMES="${keras_times[*]}"
export LSTM_MSE="${lstm_mse[*]}" KERAS_MSE="${keras_mse[*]}" LSTM_FIT="${lstm_fit[*]}"
export LOAD="$load_before -> $load_after"
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
CORES=$(nproc)
COMMIT="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- lstm_jax experiments pyproject.toml || echo ' + uncommitted changes')"
LSTM_VERSIONS=$("$LSTM_JAX_PYTHON" -c 'import jax, flax; print(f"jax {jax.__version__}, flax {flax.__version__}")')
KERAS_VERSIONS=$(KERAS_BACKEND=jax "$KERAS_PYTHON" -c 'import keras, jax; print(f"keras {keras.__version__}, jax {jax.__version__}")')
PYTHON_VERSION=$("$LSTM_JAX_PYTHON" -c 'import platform; print(platform.python_version())')
export CPU_MODEL CORES COMMIT LSTM_VERSIONS KERAS_VERSIONS PYTHON_VERSION

"$LSTM_JAX_PYTHON" - >benchmarks/forecast_vs_keras.md <<'EOF'
import datetime
import os
import statistics

env = os.environ
nums = lambda key: [float(v) for v in env[key].split()]
lt, kt, lf = nums("LSTM_TIMES"), nums("KERAS_TIMES"), nums("LSTM_FIT")
lm, km = nums("LSTM_MSE"), nums("KERAS_MSE")
med = statistics.median
spread = lambda xs: f"{min(xs):.2f}–{max(xs):.2f}"
ratio = med(lt) / med(kt)
verdict = "faster" if ratio < 1 else "slower"
print(f"""# experiments.forecast vs the Keras seed program

Both commands train LSTM(50) -> Dense(1) with Adam on MSE for 20 epochs of batch 32 on the same
950 windows of the MinMax-scaled sine (the last 20% held out), then predict. Timed as whole commands,
start-up, compilation and checkpoints included: wall clock, one first run each, then {env['RESULT_ROUNDS']} rounds
with the two alternating. lstm_jax's persistent compilation cache starts empty, so its first run
compiles everything and the rounds reuse the compiled programs, as every run after a user's first
does; Keras keeps no such cache, so its first run and its rounds do the same work.

- date: {datetime.date.today().isoformat()}
- machine: {env['CORES']} CPU cores ({env['CPU_MODEL'] or 'unknown CPU'}), no GPU, Python {env['PYTHON_VERSION']};
  load average {env['LOAD']} (the machine was shared with other jobs)
- lstm_jax: commit {env['COMMIT']}, {env['LSTM_VERSIONS']}
- Keras: {env['KERAS_VERSIONS']}, KERAS_BACKEND=jax
- reproduce: `benchmarks/forecast_vs_keras.sh {env['RESULT_ROUNDS']}`

| | command | first run s | median wall s | range s | val MSE (median) |
|---|---|---|---|---|---|
| lstm_jax | `{env['LSTM_CMD']}` | {float(env['LSTM_FIRST']):.2f} | {med(lt):.2f} | {spread(lt)} | {med(lm):.3e} |
| Keras 3 | `{env['KERAS_CMD']}` | {float(env['KERAS_FIRST']):.2f} | {med(kt):.2f} | {spread(kt)} | {med(km):.3e} |

**Ratio lstm_jax / Keras, medians of the rounds: {ratio:.2f}** (lstm_jax is {verdict}).
First runs, lstm_jax compiling everything: {float(env['LSTM_FIRST']) / float(env['KERAS_FIRST']):.2f}.

Of lstm_jax's whole command in the rounds, the training loop (Trainer.fit, from its summary's
wall_seconds: 20 epochs with a checkpoint after each, the final evaluation) took a median of
{med(lf):.2f} s; the rest is start-up (imports, model initialisation), the final prediction, writing
summary.json and learning_curves.png, and exit.

val MSE is the mean squared error on the scaled validation windows: lstm_jax's `val_mse` (its best
epoch's checkpoint, seed 0, the same every round), Keras' last-epoch `val_loss` (not seeded; over
the rounds {min(km):.2e}–{max(km):.2e}).

Per round (s): lstm_jax {', '.join(f'{t:.2f}' for t in lt)}; Keras {', '.join(f'{t:.2f}' for t in kt)}.
""")
EOF
cat benchmarks/forecast_vs_keras.md
