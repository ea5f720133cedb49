#!/usr/bin/env bash
# Install featvis and its pinned stack into .venv/ at the repo root.
# Idempotent: a stamp records the hash of what was installed, so a second call
# returns at once. Safe to interrupt: the stamp is written last.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.featvis-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "featvis setup: creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install --disable-pip-version-check --quiet)

# Build tools first: mmcv's setup.py imports torch and pkg_resources.
"${pip[@]}" "setuptools>=77,<81" wheel ninja
"${pip[@]}" torch==2.13.0

if ! "$VENV/bin/python" -c "import mmcv.ops" 2>/dev/null; then
    echo "featvis setup: building mmcv 2.1.0 with its compiled ops from source."
    echo "featvis setup: the first install compiles mmcv: the whole set-up took 8-15 minutes on 2 cores"
    echo "featvis setup: with an empty pip cache; pip caches the wheel, so later installs take seconds."
    # opencv-python-headless first, so mmcv does not pull the GUI build of opencv.
    "${pip[@]}" "numpy<2.3" opencv-python-headless mmengine==0.10.7
    # Python's own compile flags (-DNDEBUG -g -fwrapv -O3 -Wall ...) with -g0 after them: no
    # debug info, which the ops never need and which costs compile time and wheel size; the
    # optimisation level stays. setuptools REPLACES its flags with $CFLAGS when it is set,
    # so the base flags must be spelled out. MAX_JOBS: compilers at once (torch's ninja build).
    flags="$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_config_var('CFLAGS') or '')") -g0"
    CFLAGS="$flags ${CFLAGS:-}" CXXFLAGS="$flags ${CXXFLAGS:-}" \
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        "${pip[@]}" --no-build-isolation mmcv==2.1.0
fi

echo "featvis setup: installing featvis and its pinned dependencies"
"${pip[@]}" -e ".[dev,launchers]"
"$VENV/bin/python" -c "import mmcv.ops, mmseg.apis, hydra, wandb, featvis" \
    || { echo "featvis setup: the installed stack does not import; see the errors above" >&2; exit 1; }
echo "$want" > "$STAMP"
echo "featvis setup: done"
