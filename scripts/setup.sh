#!/usr/bin/env bash
# Create (or reuse) shoprec's virtual environment and link it to ./.venv.
#
# The environment is keyed by the hash of the lock file, the overrides, Python's version and the recipe below, and lives in
# a cache outside the checkout (default ~/.cache/shoprec), so a fresh clone reuses it in seconds.
# Horovod 0.28.1 ships only as source and needs two patches to build against torch 2.13; the
# built wheel is cached too. Delta Lake's jars are resolved from Maven Central once, into the cache.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${SHOPREC_CACHE:-$HOME/.cache/shoprec}
uv_version=0.13.8
horovod_version=0.28.1
python=${SHOPREC_PYTHON:-python3.11}

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

command -v "$python" >/dev/null || { log "need $python on PATH (or set SHOPREC_PYTHON)"; exit 1; }
mkdir -p "$cache"

# 1. uv, pinned, in a small bootstrap environment of its own.
uv="$cache/bootstrap/bin/uv"
if ! "$uv" --version 2>/dev/null | grep -q "$uv_version"; then
  log "installing uv $uv_version into $cache/bootstrap"
  "$python" -m venv "$cache/bootstrap"
  "$cache/bootstrap/bin/pip" install -q "uv==$uv_version"
fi
export UV_CACHE_DIR="$cache/uv"

# 2. The environment, keyed by everything that decides its contents.
# Bump env_recipe when a change to this script changes what the environment holds.
env_recipe=1
key=$( (cat "$here/requirements.lock" "$here/overrides.txt"; "$python" --version; echo "$env_recipe $horovod_version") \
       | sha256sum | cut -c1-16)
env="$cache/envs/$key"
if [ ! -f "$env/.complete" ]; then
  log "building environment $env (first time for this lock file: several minutes)"
  rm -rf "$env"
  "$uv" venv -q --seed --python "$python" "$env"
  "$uv" pip sync -q --python "$env/bin/python" "$here/requirements.lock"

  # 3. Horovod from source, patched; the wheel is cached by Horovod, torch and Python version.
  torch_version=$("$env/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')
  wheels="$cache/wheels/horovod-$horovod_version-torch$torch_version-$("$python" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')"
  if ! ls "$wheels"/horovod-*.whl >/dev/null 2>&1; then
    command -v cmake >/dev/null || { log "Horovod's build needs cmake and a C++17 compiler (apt-get install cmake g++)"; exit 1; }
    log "building Horovod $horovod_version against torch $torch_version (about 2-5 minutes)"
    src=$(mktemp -d)
    "$env/bin/python" -m pip download -q --no-deps --no-binary :all: -d "$src" "horovod==$horovod_version"
    tar -xzf "$src"/horovod-*.tar.gz -C "$src"
    # torch >= 2.1's headers need C++17; Horovod 0.28.1 asks for C++14 in two places.
    sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' \
      "$src/horovod-$horovod_version/CMakeLists.txt" "$src/horovod-$horovod_version/horovod/torch/CMakeLists.txt"
    grep -q 'CMAKE_CXX_STANDARD 17' "$src/horovod-$horovod_version/horovod/torch/CMakeLists.txt" \
      || { log "Horovod's CMake files changed: the C++17 patch no longer applies"; exit 1; }
    mkdir -p "$wheels"
    # Bundled gloo's CMake files predate CMake 4's policy floor.
    CMAKE_POLICY_VERSION_MINIMUM=3.5 HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
      HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS="-j$(nproc)" \
      "$env/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$wheels" "$src/horovod-$horovod_version" \
      > "$cache/horovod-build.log" 2>&1 || { log "Horovod build failed: see $cache/horovod-build.log"; exit 1; }
    rm -rf "$src"
  fi
  "$uv" pip install -q --python "$env/bin/python" --no-deps "$wheels"/horovod-*.whl
  touch "$env/.complete"
fi

# 4. Point the checkout at it and install shoprec itself (editable, no dependencies: all are locked).
ln -sfn "$env" "$here/.venv"
"$uv" pip install -q --python "$env/bin/python" --no-deps --no-build-isolation -e "$here"

# 5. Delta Lake's jars: resolved from Maven Central once into the cache (no-op when present).
"$env/bin/python" -m shoprec.spark --fetch-jars

# 6. Airflow, in a virtual environment of its own (its pins never meet the pipeline's), for the
#    DAG's tests; linked as ./.airflow-venv. Keyed by its lock file's hash like the main one.
af_lock="$here/dags/requirements-airflow.lock"
af_env="$cache/airflow/$( (cat "$af_lock"; echo "$python") | sha256sum | cut -c1-16)"
if [ ! -f "$af_env/.complete" ]; then
  log "building the Airflow environment $af_env"
  rm -rf "$af_env"
  "$uv" venv -q --python "$python" "$af_env"
  "$uv" pip sync -q --python "$af_env/bin/python" "$af_lock"
  touch "$af_env/.complete"
fi
ln -sfn "$af_env" "$here/.airflow-venv"

# 7. A headless Chromium (Debian's package) renders the report for its screenshot and its test.
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian's chromium (the report's screenshot)"
    apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
  else
    log "no chromium on PATH: the report's screenshot (and its test) need Debian's package chromium"
  fi
fi
log "ready: $here/.venv -> $env, $here/.airflow-venv -> $af_env"
