#!/usr/bin/env bash
# Rebuild every framework zoo model, each in its own virtualenv under VENVS (default /work/venvs).
# Usage, from the repository root:  bash models/frameworks/build_all.sh [VENVS] [keras jax sklearn paddle]
# A venv that does not exist is created from models/frameworks/requirements-NAME.txt.
set -euo pipefail
VENVS=${1:-/work/venvs}
shift || true
NAMES=("$@")
[ ${#NAMES[@]} -eq 0 ] && NAMES=(keras jax sklearn paddle)
for name in "${NAMES[@]}"; do
  venv="$VENVS/$name"
  if [ ! -x "$venv/bin/python" ]; then
    python3.11 -m venv "$venv"
    "$venv/bin/pip" install -q -r "models/frameworks/requirements-$name.txt"
  fi
  PYTHONHASHSEED=0 "$venv/bin/python" -m "models.frameworks.build_$name"
done
