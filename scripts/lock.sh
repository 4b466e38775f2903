#!/usr/bin/env bash
# Re-resolve requirements.in (+ overrides.txt) into requirements.lock for the one target platform.
# Run after editing requirements.in; scripts/setup.sh then builds the new environment.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
uv="${SHOPREC_CACHE:-$HOME/.cache/shoprec}/bootstrap/bin/uv"
[ -x "$uv" ] || { echo "run scripts/setup.sh once first (it installs the pinned uv)"; exit 1; }
cd "$here"
"$uv" pip compile --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --override overrides.txt requirements.in -o requirements.lock
