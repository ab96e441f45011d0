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

# Project-local Python environment (pinned in scripts/requirements.txt): torch 2.11.0, whose libtorch
# the model crate links through tch; transformers and llama-cpp-python for interop tests; datasketch
# for `bench corpus`.
venv="$root/.venv"
stamp="$venv/.starling-setup-8"
if [ ! -f "$stamp" ]; then
  echo "setup: creating $venv (python packages for benchmarks)"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  # llama-cpp-python compiles llama.cpp from source (~7.5 min on 2 cores) with every core. On x86-64
  # for AVX2 rather than -march=native: built natively on a Xeon with AMX, ggml segfaults in its
  # first decode (seen 2026-12-02). pip's wheel cache does not key on CMAKE_ARGS, so the AVX2 wheel
  # is built once into a cache of its own and installed from there.
  if [ "$(uname -m)" = x86_64 ]; then
    llama_req="$(grep -E '^llama-cpp-python==' "$root/scripts/requirements.txt")"
    llama_wheels="${XDG_CACHE_HOME:-$HOME/.cache}/starling/llama-cpp-avx2/${llama_req#*==}"
    if ! ls "$llama_wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
      echo "setup: building $llama_req for AVX2 (~7.5 min on 2 cores)"
      CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" \
      CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        "$venv/bin/pip" wheel --quiet --disable-pip-version-check --no-deps --no-cache-dir \
        -w "$llama_wheels" "$llama_req"
    fi
    # --force-reinstall: a venv that already holds the same version (a native build) keeps it
    # otherwise, pip seeing nothing to do.
    "$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps \
      "$llama_wheels"/llama_cpp_python-*.whl
  fi
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/scripts/requirements.txt"
  touch "$stamp"
fi
# .cargo/config.toml points LIBTORCH at this link to the wheel's torch folder.
if [ ! -e "$venv/libtorch/lib/libtorch_cpu.so" ]; then
  ln -sfn "$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')" "$venv/libtorch"
fi
export STARLING_PYTHON="$venv/bin/python"

# crates/starling-dist compiles against gloo's headers (Debian's libgloo-dev; the gloo code itself
# is inside libtorch_cpu). Headers only: nothing of it is linked.
if [ ! -f /usr/include/gloo/config.h ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing libgloo-dev (Debian) for the c10d shim"
    apt-get install -y --no-install-recommends libgloo-dev >/dev/null 2>&1 \
      || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends libgloo-dev >/dev/null; } \
      || { echo "setup: could not install libgloo-dev; starling-dist will not build" >&2; exit 1; }
  else
    echo "setup: /usr/include/gloo missing: install Debian's libgloo-dev (as root: apt-get install libgloo-dev)" >&2
    exit 1
  fi
fi

# The page's browser test drives Debian's chromium through chromedriver (scripts/test asks for it).
starling_setup_browser() {
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing chromium and chromium-driver (Debian) for the browser test"
    apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
      || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null; } \
      || echo "setup: could not install chromium; the browser test will skip (or fail in CI)" >&2
  else
    echo "setup: chromium/chromedriver missing and apt-get unavailable; the browser test will skip (or fail in CI)" >&2
  fi
}
