#!/usr/bin/env bash
# Install mmcv (full, with compiled ops) into a venv, building the wheel once and caching it.
# Usage: tools/install_mmcv.sh PYTHON MMCV_VERSION WHEEL_CACHE_DIR [FLAVOUR]
# The cache key includes the torch version and CUDA flavour, since mmcv's ops link against torch.
# FLAVOUR (e.g. cpu) replaces torch's own local version in the key: a venv that runs on the CPU
# with a CUDA build of torch (make sweep's) uses the CPU build of mmcv's ops for that torch version.
set -euo pipefail
py=$1 version=$2 cache_root=$3 flavour=${4:-}
tag=$("$py" -c "import sys, torch; v = torch.__version__; v = v.split('+')[0] + '+$flavour' if '$flavour' else v; print(f'py{sys.version_info[0]}{sys.version_info[1]}-torch{v}')")
cache="$cache_root/$tag"
mkdir -p "$cache"
wheel=$(ls "$cache"/mmcv-"$version"-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
  echo "Building mmcv $version with ops for $tag (about 12 minutes on 2 cores; cached in $cache) ..."
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$py" -m pip wheel --no-build-isolation --no-deps \
    -w "$cache" "mmcv==$version"
  wheel=$(ls "$cache"/mmcv-"$version"-*.whl | head -n 1)
else
  echo "Using cached mmcv wheel $wheel"
fi
"$py" -m pip install "$wheel"
