#!/usr/bin/env bash
# Installs what starling needs on a fresh machine; safe to run again (it skips what is done).
# Sourced by scripts/demo and scripts/test.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi

# Project-local Python environment: datasketch for `starling bench corpus` (the reference it is
# measured against). Later stages add the pinned torch wheel here.
venv="$root/.venv"
stamp="$venv/.starling-setup-2"
if [ ! -f "$stamp" ]; then
  echo "setup: creating $venv (python packages for benchmarks)"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/scripts/requirements.txt"
  touch "$stamp"
fi
export STARLING_PYTHON="$venv/bin/python"
