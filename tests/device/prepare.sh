#!/usr/bin/env bash
# Fetch, on a machine with a network, what the GPU machine lacks for tests/device/check_gpus.py:
# the project's Python dependencies as wheels for its Python (3.12, x86-64; the versions this
# checkout's .venv holds) and Debian 12's bubblewrap package, into .ci/cache/device (git
# ignores .ci/cache). The check installs them there itself. About 15 MiB.
#   bash tests/device/prepare.sh [PYTHON_VERSION]        (default 3.12)
set -euo pipefail
cd "$(dirname "$0")/../.."

version="${1:-3.12}"
out=.ci/cache/device
python=.venv/bin/python
# What the runtime, the inventory and the test harness import (check_gpus.MODULES), by
# distribution name, and pytest's own.
names="annotated-types bcrypt cffi cryptography nvidia-ml-py psutil pydantic pydantic-core
pyfastcdc rfc8785 ruamel.yaml typing-extensions typing-inspection zfec
pytest iniconfig pluggy pygments packaging"

pins=()
frozen=$("$python" -m pip freeze)
for name in $names; do
    pattern="^$(printf '%s' "$name" | sed 's/[-_.]/[-_.]/g')=="
    pin=$(printf '%s\n' "$frozen" | grep -i -m1 "$pattern" || true)
    [ -n "$pin" ] || { echo "prepare: $name is not in .venv (bash .ci/setup --test)" >&2; exit 2; }
    pins+=("$pin")
done

rm -rf "$out" && mkdir -p "$out/wheels"
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 \
    manylinux_2_5 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version "$version" \
    --implementation cp "${platforms[@]}" -d "$out/wheels" "${pins[@]}"
(cd "$out" && apt-get download -q bubblewrap >/dev/null)
echo "prepare: $(ls "$out/wheels" | wc -l) wheels and $(cd "$out" && ls bubblewrap_*.deb)" \
    "in $out ($(du -sh "$out" | cut -f1)); carry it: run(carry=[\"$out\"])"
