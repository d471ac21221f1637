#!/usr/bin/env bash
# lstm_jax launcher: sets up a virtual environment on first use, then runs an experiment or the tests.
#
#   ./launch.sh help            what follows, in short
#   ./launch.sh binary [flags]  python -m experiments.binary   (--helpfull lists every flag)
#   ./launch.sh classify [...]  python -m experiments.classify
#   ./launch.sh forecast [...]  python -m experiments.forecast
#   ./launch.sh seeds [flags]   the four seed programs, then a results table (python -m experiments.seeds)
#   ./launch.sh ucr | study | bench [flags]   python -m experiments.ucr / .study / .benchmark
#   ./launch.sh test [args]     python -m pytest -q tests; arguments go to pytest
#
# Environment:
#   .venv/ in this directory is created on first use and the project installed into it with
#   `pip install -e '.[test]'`, which also compiles the native CPU kernels (lstm_jax/csrc). It is
#   installed again only when pyproject.toml, setup.py or those sources change (a hash of them is
#   kept in .venv/.lstm_jax-installed) and made anew when the jax flavour below changes.
#   LSTM_JAX_CUDA   unset: CUDA jax ('.[test,cuda12]') when `nvidia-smi` answers, CPU jax otherwise;
#                   0: CPU jax even on a GPU machine; 1 or 12: '.[test,cuda12]'; 13: '.[test,cuda13]'.
#   LSTM_JAX_VENV   use this already-installed environment as it is: nothing is created or
#                   installed (CI does this after its own `pip install -e '.[test]'`).
#   PYTHON          the interpreter that creates .venv (default python3; 3.10 or newer).
set -euo pipefail

if [[ -n "${LSTM_JAX_VENV:-}" && "$LSTM_JAX_VENV" != /* ]]; then
  LSTM_JAX_VENV=$PWD/$LSTM_JAX_VENV
fi
cd "$(dirname "${BASH_SOURCE[0]}")"

usage() {
  cat <<'EOF'
usage: ./launch.sh <command> [arguments]

commands:
  binary [flags]     binary classification (python -m experiments.binary); e.g. --bidirectional, --stacked
  classify [flags]   any number of classes, e.g. --dataset=ucr:NAME --data_dir=DIR (python -m experiments.classify)
  forecast [flags]   forecasting: the seed sine program, or --dataset=csv:PATH --column=NAME --test_size=N
                     (python -m experiments.forecast)
  seeds [flags]      run the four seed programs and print their results table (python -m experiments.seeds)
  ucr [flags]        the UCR recipe on every set in ../shared/data/ucr, with the baselines (python -m experiments.ucr)
  study [flags]      an ablation study on Optuna: --config=experiments/configs/studies/quick.py (python -m experiments.study)
  predict [flags]    predictions from a finished run: --workdir=RUN --input=FILE (python -m experiments.predict)
  export [flags]     a finished run as jax.export or ONNX programs: --workdir=RUN --format=jax|onnx --output=DIR
  bench [flags]      the LSTM speed benchmark against its peers (python -m benchmarks.benchmark)
  test [args]        the test suite (python -m pytest -q tests); arguments go to pytest
  help               this message

Experiment flags: ./launch.sh binary --helpfull (likewise classify, forecast, seeds). Each run is a
config file (experiments/configs/) with overrides: --config=FILE --config.FIELD=VALUE. Commands run in
this script's directory, so relative paths in flags (--workdir) are taken from there.

The first run creates .venv here and installs the project (CPU jax; CUDA jax when nvidia-smi
answers). Set LSTM_JAX_CUDA=0 to force CPU jax, LSTM_JAX_CUDA=1 to force CUDA 12 jax
(13 for CUDA 13), LSTM_JAX_VENV=DIR to use an environment you installed yourself.

Multi-host: start the same command once per process, each with its own --process_id, e.g. on
two hosts (or twice on one machine) with a --workdir both see:
  ./launch.sh binary --coordinator_address=host0:12345 --num_processes=2 --process_id=0 --workdir=/shared/run
  ./launch.sh binary --coordinator_address=host0:12345 --num_processes=2 --process_id=1 --workdir=/shared/run
(or LSTM_JAX_COORDINATOR, LSTM_JAX_NUM_PROCESSES, LSTM_JAX_PROCESS_ID in the environment).

`test` exits with pytest's status. pytest's 5 ("no tests collected", also when -k/-m deselects
everything) is kept as a failure, so a run that tested nothing never passes for a green one.
EOF
}

die() {
  echo "launch.sh: $*" >&2
  exit 1
}

# A hash of what the install builds from: the package metadata and the native kernels' sources.
build_hash() {
  local files=(pyproject.toml setup.py lstm_jax/csrc/*)
  if command -v sha256sum >/dev/null 2>&1; then
    cat "${files[@]}" | sha256sum | cut -d' ' -f1
  else
    cat "${files[@]}" | shasum -a 256 | cut -d' ' -f1
  fi
}

# Which pip extras give the jax this machine should run: 'test' (CPU) or 'test,cudaNN'.
extras() {
  case "${LSTM_JAX_CUDA:-}" in
    0) echo test ;;
    1 | 12) echo test,cuda12 ;;
    13) echo test,cuda13 ;;
    "")
      if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo test,cuda12
      else
        echo test
      fi
      ;;
    *) die "LSTM_JAX_CUDA must be 0, 1, 12 or 13, not '${LSTM_JAX_CUDA}'" ;;
  esac
}

# Sets PY to an interpreter that has this checkout installed, creating or updating .venv as needed.
setup_env() {
  local venv
  if [[ -n "${LSTM_JAX_VENV:-}" ]]; then
    venv=$LSTM_JAX_VENV
    [[ -x "$venv/bin/python" ]] || die "LSTM_JAX_VENV=$venv holds no bin/python"
  else
    venv=$PWD/.venv
    local extras want stamp=.venv/.lstm_jax-installed
    extras=$(extras)
    want="extras=$extras build=$(build_hash)"
    # One launcher at a time builds the environment; the others wait here, then find it ready.
    # The lock is on this directory itself, so no lock file is left behind.
    if command -v flock >/dev/null 2>&1; then
      exec 9<.
      flock 9
    fi
    if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
      local python=${PYTHON:-python3}
      "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null ||
        die "$python is missing or older than 3.10; set PYTHON to a newer interpreter"
      # A venv whose interpreter no longer runs, or that holds the other jax flavour, is made anew
      # (pip would leave the CUDA plugins of before in place).
      if ! .venv/bin/python -c '' 2>/dev/null || [[ "$(cat "$stamp" 2>/dev/null)" != "extras=$extras "* ]]; then
        rm -rf .venv
      fi
      if [[ ! -d .venv ]]; then
        echo "launch.sh: creating .venv with $python" >&2
        "$python" -m venv .venv
      fi
      echo "launch.sh: installing lstm_jax into .venv: pip install -e '.[$extras]'" >&2
      .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$extras]"
      echo "$want" >"$stamp"
    fi
    exec 9<&-
  fi
  export VIRTUAL_ENV=$venv
  export PATH=$venv/bin:$PATH
  PY=$venv/bin/python
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift

case "$cmd" in
  help | -h | --help)
    usage
    ;;
  binary | classify | forecast | seeds | study | ucr | predict | export)
    setup_env
    exec "$PY" -m "experiments.$cmd" "$@"
    ;;
  bench)
    setup_env
    exec "$PY" -m benchmarks.benchmark "$@"
    ;;
  test)
    setup_env
    # No arguments: the tests/ folder. With arguments, pyproject's testpaths still points at tests/
    # unless a path or node id is among them.
    [[ $# -gt 0 ]] || set -- tests
    rc=0
    "$PY" -m pytest -q "$@" || rc=$?
    if [[ $rc -eq 5 ]]; then
      echo "launch.sh: pytest ran no tests (exit 5: none collected, or all deselected); that is a failure, not a pass" >&2
    fi
    exit "$rc"
    ;;
  *)
    [[ -n "$cmd" ]] && echo "launch.sh: unknown command '$cmd'" >&2
    usage >&2
    exit 2
    ;;
esac
