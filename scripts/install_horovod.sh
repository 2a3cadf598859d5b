#!/usr/bin/env bash
# Reproducible, cached build of Horovod 0.28.1 against the venv's torch (CPU: Gloo controller).
#
# Usage: scripts/install_horovod.sh [VENV_DIR]          (default: .venv)
#
# 1. Already installed (import horovod.torch works, version 0.28.1, built for this torch) -> exit 0.
# 2. Cached wheel in $BACKDROP_CACHE/wheels/<build key>/horovod-0.28.1-*.whl -> pip install --no-deps it.
# 3. Otherwise build the wheel from the sdist (C++14 -> C++17 patch, torch >= 2.1 needs C++17),
#    move it atomically into the cache, install it.
# 4. Verify with `horovodrun --check-build` (PyTorch and Gloo must be [X]).
#
# The build key encodes everything the binary depends on: torch version, CPython tag and the
# GPU-ops variant, e.g. wheels/torch-2.13.0+cpu-cp311-cpu/.
#
# GPU: when `nvcc` is on PATH AND torch.cuda.is_available() is True, the build uses
# HOROVOD_GPU_OPERATIONS=NCCL (NCCL is found via HOROVOD_NCCL_HOME / the CUDA toolkit; set
# HOROVOD_NCCL_HOME if NCCL lives elsewhere) and the cache key gets a `cuda<ver>-nccl` suffix.
# With a CPU-only torch (this project's torch==2.13.0 CPU wheel) the build is CPU/Gloo even if
# nvcc exists.
#
# Environment knobs:
#   BACKDROP_CACHE            cache root (default ~/.cache/backdrop)
#   HOROVOD_FORCE_REBUILD=1   ignore the installed package and the cached wheel
#   HOROVOD_BUILD_JOBS        parallel compile jobs (default: nproc, capped by RAM at ~2 GiB/job)
#   MAKEFLAGS                 if set, passed through unchanged (wins over HOROVOD_BUILD_JOBS)
#   HOROVOD_BUILD_ARCH_FLAGS  passed through if set; unset = upstream default (-mf16c -mavx -mfma,
#                             each kept only if the compiler accepts it)
set -euo pipefail

HVD_VERSION=0.28.1
# Horovod's runtime requirements (setup.py require_list; cffi because the PyTorch extension is
# built). Only installed if missing, so they never move what the project's resolver chose.
# The pins are the exact versions the project venv resolved to (with torch 2.13.0+cpu).
RUNTIME_PINS=(
    "cloudpickle==3.1.3"
    "psutil==7.2.2"
    "pyyaml==6.0.4"
    "packaging==26.4"
    "cffi==2.1.1"
)
# Build-only Python helpers, installed into the venv if missing.
BUILD_PINS=(
    "setuptools==84.2.1"
    "wheel==0.48.0"
)

VENV=${1:-.venv}
PY="$VENV/bin/python"
CACHE=${BACKDROP_CACHE:-$HOME/.cache/backdrop}
LOG_DIR="$CACHE/logs"
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/install_horovod.log"

say() { printf '[install_horovod] %s\n' "$*"; printf '[%s] %s\n' "$(date '+%F %T')" "$*" >>"$LOG"; }
die() {
    printf '[install_horovod] ERROR: %s\n' "$*" >&2
    printf '[%s] ERROR: %s\n' "$(date '+%F %T')" "$*" >>"$LOG"
    exit 1
}
# run CMD... : run a command with its output appended to the log; on failure show the log tail.
run() {
    printf '[%s] $ %s\n' "$(date '+%F %T')" "$*" >>"$LOG"
    if ! "$@" >>"$LOG" 2>&1; then
        printf '[install_horovod] ERROR: command failed: %s\n--- last 40 lines of %s ---\n' "$*" "$LOG" >&2
        tail -n 40 "$LOG" >&2
        exit 1
    fi
}

[ -x "$PY" ] || die "no python at $PY (create the venv first: make install)"
VENV=$(cd "$VENV" && pwd)
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

# ---------------------------------------------------------------- 1. already installed?
installed_ok() {
    "$PY" - "$HVD_VERSION" >/dev/null 2>&1 <<'EOF'
import json, os, sys
import torch
import horovod
import horovod.torch  # noqa: F401  (loads the compiled extension)
assert horovod.__version__ == sys.argv[1], horovod.__version__
# metadata.json records the torch the extension was built against
meta = json.load(open(os.path.join(os.path.dirname(horovod.__file__), "metadata.json")))
assert meta.get("pytorch") == torch.__version__, (meta, torch.__version__)
EOF
}

if [ "${HOROVOD_FORCE_REBUILD:-0}" != 1 ] && installed_ok; then
    say "horovod already installed ($HVD_VERSION, $VENV)"
    exit 0
fi

printf '\n==== %s install_horovod.sh %s ====\n' "$(date '+%F %T')" "$VENV" >>"$LOG"
say "log: $LOG"

# ---------------------------------------------------------------- build key
TORCH_INFO=$("$PY" - <<'EOF'
import sys, torch
cuda = torch.version.cuda or ""
print(torch.__version__, f"cp{sys.version_info.major}{sys.version_info.minor}",
      int(torch.cuda.is_available()), cuda or "-")
EOF
) || die "cannot import torch in $VENV (install the project requirements first)"
read -r TORCH_VER PYTAG CUDA_AVAIL TORCH_CUDA <<<"$TORCH_INFO"

GPU_OPS=""
VARIANT=cpu
if command -v nvcc >/dev/null 2>&1 && [ "$CUDA_AVAIL" = 1 ]; then
    GPU_OPS=NCCL
    VARIANT="cuda${TORCH_CUDA}-nccl"
    say "CUDA detected (nvcc + torch.cuda.is_available()): building with HOROVOD_GPU_OPERATIONS=NCCL"
else
    say "CPU build (Gloo): torch $TORCH_VER, cuda available=$CUDA_AVAIL, nvcc $(command -v nvcc >/dev/null 2>&1 && echo present || echo absent)"
fi

WHEEL_DIR="$CACHE/wheels/torch-${TORCH_VER}-${PYTAG}-${VARIANT}"
mkdir -p "$WHEEL_DIR" "$CACHE/tmp" "$CACHE/sdist"

# One build at a time per cache (a concurrent second run waits, then finds the cached wheel).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE/.install_horovod.lock"
    if ! flock -n 9; then
        say "another install_horovod.sh holds $CACHE/.install_horovod.lock; waiting"
        flock 9
    fi
fi

# ---------------------------------------------------------------- runtime deps
ensure_runtime_deps() {
    local missing=()
    # one interpreter start: print the pinned specs whose distribution is not installed at all
    mapfile -t missing < <("$PY" - "${RUNTIME_PINS[@]}" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for spec in sys.argv[1:]:
    try:
        version(spec.split("==")[0])
    except PackageNotFoundError:
        print(spec)
EOF
)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing missing horovod runtime deps: ${missing[*]}"
        run "${PIP[@]}" install "${missing[@]}"
    fi
}

find_cached_wheel() {
    compgen -G "$WHEEL_DIR/horovod-${HVD_VERSION}-*.whl" | sort | tail -n 1 || true
}

install_wheel() {
    ensure_runtime_deps
    say "installing $(basename "$1")"
    run "${PIP[@]}" install --no-deps --force-reinstall "$1"
}

verify() {
    local out
    out=$("$VENV/bin/horovodrun" --check-build 2>&1) || { printf '%s\n' "$out" >&2; die "horovodrun --check-build failed"; }
    printf '%s\n' "$out" | tee -a "$LOG"
    grep -q '\[X\] PyTorch' <<<"$out" || die "horovod was built without PyTorch support"
    grep -q '\[X\] Gloo' <<<"$out" || die "horovod was built without the Gloo controller"
    if [ -n "$GPU_OPS" ]; then
        grep -q '\[X\] NCCL' <<<"$out" || die "horovod was built without NCCL ops"
    fi
}

# ---------------------------------------------------------------- 2. cached wheel
WHEEL=""
if [ "${HOROVOD_FORCE_REBUILD:-0}" != 1 ]; then
    WHEEL=$(find_cached_wheel)
fi
if [ -n "$WHEEL" ]; then
    say "using cached wheel $WHEEL"
    install_wheel "$WHEEL"
    if installed_ok; then
        say "verifying: horovodrun --check-build"
        verify
        say "done (from cache)"
        exit 0
    fi
    say "cached wheel does not import cleanly; moving it aside and rebuilding"
    mv -f "$WHEEL" "$WHEEL.broken"
fi

# ---------------------------------------------------------------- 3. build
missing=()
command -v cmake >/dev/null 2>&1 || missing+=("cmake (>= 3.13; apt-get install cmake)")
command -v g++ >/dev/null 2>&1 || missing+=("g++ (apt-get install g++)")
command -v make >/dev/null 2>&1 || missing+=("make (apt-get install make)")
[ ${#missing[@]} -eq 0 ] || die "missing build tools: ${missing[*]}"

# Python build helpers in the venv (no build isolation, so they must be there).
helpers=()
"$PY" -c "import setuptools" >/dev/null 2>&1 || helpers+=("${BUILD_PINS[0]}")
"$PY" -c "import wheel" >/dev/null 2>&1 || helpers+=("${BUILD_PINS[1]}")
if [ ${#helpers[@]} -gt 0 ]; then
    say "missing python build helpers in the venv: ${helpers[*]} (installing)"
    run "${PIP[@]}" install "${helpers[@]}"
fi
# setup.py lists the runtime deps as setup_requires for bdist_wheel: have them before building.
ensure_runtime_deps

# Temp dirs of an interrupted earlier build (we hold the lock, so nobody else is using them).
rm -rf "${CACHE:?}/tmp/"build.* 2>/dev/null || true
BUILD_TMP=$(mktemp -d "$CACHE/tmp/build.XXXXXX")
trap 'rm -rf "$BUILD_TMP"' EXIT

SDIST="$CACHE/sdist/horovod-${HVD_VERSION}.tar.gz"
if [ ! -s "$SDIST" ]; then
    say "downloading sdist horovod==$HVD_VERSION"
    run "${PIP[@]}" download --no-deps --no-binary :all: --no-build-isolation \
        -d "$BUILD_TMP/dl" "horovod==$HVD_VERSION"
    dl=$(compgen -G "$BUILD_TMP/dl/horovod-${HVD_VERSION}.tar.gz" | head -n 1) || true
    [ -n "$dl" ] || die "pip download did not produce horovod-${HVD_VERSION}.tar.gz"
    mv -f "$dl" "$SDIST.partial.$$" && mv -f "$SDIST.partial.$$" "$SDIST"
else
    say "using cached sdist $SDIST"
fi

say "unpacking and patching C++14 -> C++17"
tar -xzf "$SDIST" -C "$BUILD_TMP"
SRC="$BUILD_TMP/horovod-$HVD_VERSION"
[ -f "$SRC/setup.py" ] || die "unexpected sdist layout (no $SRC/setup.py)"
for f in CMakeLists.txt horovod/torch/CMakeLists.txt; do
    grep -q 'set(CMAKE_CXX_STANDARD 14)' "$SRC/$f" \
        || die "pattern 'set(CMAKE_CXX_STANDARD 14)' not found in $f: the sdist changed, refusing to build"
    sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$SRC/$f"
    grep -q 'set(CMAKE_CXX_STANDARD 17)' "$SRC/$f" || die "patch of $f did not apply"
done

if [ -z "${MAKEFLAGS:-}" ]; then
    if [ -z "${HOROVOD_BUILD_JOBS:-}" ]; then
        cpus=$(nproc 2>/dev/null || echo 2)
        mem_gib=$(awk '/MemAvailable/ {print int($2 / 1048576)}' /proc/meminfo 2>/dev/null || echo 4)
        by_mem=$(( mem_gib / 2 )); [ "$by_mem" -ge 1 ] || by_mem=1
        HOROVOD_BUILD_JOBS=$(( cpus < by_mem ? cpus : by_mem ))
    fi
    export MAKEFLAGS="-j${HOROVOD_BUILD_JOBS}"
fi

build_env=(
    HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1
    HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1
)
if [ -n "$GPU_OPS" ]; then
    build_env+=(HOROVOD_GPU_OPERATIONS="$GPU_OPS")
else
    build_env+=(HOROVOD_CPU_OPERATIONS=GLOO)
fi

say "building wheel (≈3 min on 2 idle cores, ≈12 min on a busy machine; MAKEFLAGS=$MAKEFLAGS, ${build_env[*]}${HOROVOD_BUILD_ARCH_FLAGS:+, HOROVOD_BUILD_ARCH_FLAGS=$HOROVOD_BUILD_ARCH_FLAGS})"
start=$SECONDS
mkdir -p "$BUILD_TMP/wheel"
(cd "$SRC" && run env "${build_env[@]}" "${PIP[@]}" wheel --no-deps --no-build-isolation -v \
    -w "$BUILD_TMP/wheel" .)
built=$(compgen -G "$BUILD_TMP/wheel/horovod-${HVD_VERSION}-*.whl" | head -n 1) || true
[ -n "$built" ] || die "pip wheel finished but produced no horovod-${HVD_VERSION}-*.whl"
say "built $(basename "$built") in $(( SECONDS - start )) s ($(du -h "$built" | cut -f1))"

# Atomic publish: copy next to the destination, then rename (same filesystem).
WHEEL="$WHEEL_DIR/$(basename "$built")"
cp -f "$built" "$WHEEL.partial.$$"
mv -f "$WHEEL.partial.$$" "$WHEEL"
say "cached $WHEEL"

install_wheel "$WHEEL"

# ---------------------------------------------------------------- 4. verify
installed_ok || die "import horovod.torch fails after installing the freshly built wheel (see $LOG)"
say "verifying: horovodrun --check-build"
verify
say "done"
