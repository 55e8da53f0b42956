#!/usr/bin/env bash
# The one Python venv of every test suite and the benchmarks: $STRATA_CACHE/testbed-venv, from
# requirements.txt beside this script. Made or updated only when requirements.txt or the Python
# version changed (a stamp in the venv); a warm run takes milliseconds and no network.
# Prints the venv's python on stdout, so that a run.sh does
#   PY="$(bash tests/testbed/venv.sh)" || exit 1
# Environment: STRATA_CACHE (default ~/.cache/strata-testbed), STRATA_PYTHON (default python3).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${STRATA_CACHE:-$HOME/.cache/strata-testbed}"
VENV="$CACHE/testbed-venv"
REQS="$HERE/requirements.txt"
PY="${STRATA_PYTHON:-python3}"
mkdir -p "$CACHE"

want="$(sha256sum "$REQS" | cut -d' ' -f1)-$("$PY" -c 'import sys; print(sys.version.split()[0])')"
current() { [[ -x "$VENV/bin/python" && "$(cat "$VENV/.stamp" 2>/dev/null)" == "$want" ]]; }
if ! current; then
  # Two suites started at once must not both pip into the venv.
  exec 9>"$CACHE/testbed-venv.lock"
  flock 9
  if ! current; then
    echo "[venv] python venv -> $VENV" >&2
    [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS"
    echo "$want" > "$VENV/.stamp"
  fi
fi
echo "$VENV/bin/python"
