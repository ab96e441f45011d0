#!/usr/bin/env bash
# Builds llama.cpp's llama-server from the llama.cpp sources vendored in the pinned llama-cpp-python
# sdist (scripts/requirements.txt), into .venv/llama.cpp/bin/llama-server, for
# `starling bench serve --against llama-cpp`. Skips the build when the binary is there (10-15 min on 2 cores).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="$(sed -n 's/^llama-cpp-python==//p' "$root/scripts/requirements.txt")"
dest="$root/.venv/llama.cpp"
bin="$dest/bin/llama-server"
if [ -x "$bin" ] && [ "$(cat "$dest/version" 2>/dev/null)" = "$version" ]; then
  echo "llama-server: $bin (llama-cpp-python $version) is built"; exit 0
fi
command -v cmake >/dev/null 2>&1 || "$root/.venv/bin/pip" install --quiet --disable-pip-version-check cmake
export PATH="$root/.venv/bin:$PATH"
work="$dest/src"; mkdir -p "$work"
sdist="$work/llama_cpp_python-$version.tar.gz"
if [ ! -f "$sdist" ]; then
  url="$("$root/.venv/bin/python" - "$version" <<'PY'
import json, sys, urllib.parse, urllib.request
v = sys.argv[1]
base = "https://pypi.org/pypi/llama-cpp-python/json"
d = json.load(urllib.request.urlopen(base, timeout=60))
files = d.get("releases", {}).get(v) or (d["urls"] if d["info"]["version"] == v else [])
u = [x for x in files if x["packagetype"] == "sdist"][0]
print(urllib.parse.urljoin(base, u["url"]), u["digests"]["sha256"])
PY
)"
  set -- $url
  echo "llama-server: downloading $1"
  curl -sSfL -o "$sdist.part" "$1"
  echo "$2  $sdist.part" | sha256sum -c --quiet
  mv "$sdist.part" "$sdist"
fi
rm -rf "$work/llama_cpp_python-$version"
tar xzf "$sdist" -C "$work"
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
cmake --build "$work/build" --target llama-server -j "$(nproc)" >/dev/null
mkdir -p "$dest/bin"
cp "$work/build/bin/llama-server" "$bin"
echo "$version" > "$dest/version"
rm -rf "$work/build" "$work/llama_cpp_python-$version"
echo "llama-server: built $bin from llama-cpp-python $version's llama.cpp"
