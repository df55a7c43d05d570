#!/usr/bin/env bash
# The GPU training benchmark on a machine that has PyTorch and transformers but none of this
# project's other dependencies (see bench/gpu_train.py for what it measures).
#
#   bench/gpu_train.sh --prepare   # here, with network/pip: wheels + baseline into bench/.gpu/
#   bench/gpu_train.sh             # on the GPU machine (bench/.gpu/ travels with the checkout)
#   bench/gpu_train.sh --dry       # toy sizes on the CPU, to check the script itself
set -euo pipefail
cd "$(dirname "$0")/.."
HERE=bench/.gpu
PY=${PYTHON:-python3}

case "${1:-}" in
--prepare)
    mkdir -p "$HERE/wheels"
    # DeepSpeed without prebuilt ops (FusedAdam JIT-builds on the GPU machine), plus the pure
    # Python packages it and this trainer import, for the GPU machine's Python 3.12.
    DS_BUILD_OPS=0 $PY -m pip wheel --quiet --no-deps --no-build-isolation deepspeed==0.19.8 -w "$HERE/wheels"
    $PY -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$HERE/wheels" \
        hjson==3.1.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection \
        typing_extensions py-cpuinfo msgpack ninja einops
    cp "${BASELINE:-../shared/gpu/baseline_phi_train.py}" "$HERE/baseline_phi_train.py"
    ls "$HERE/wheels"
    ;;
--dry)
    $PY bench/gpu_train.py --dry
    ;;
"")
    # FusedAdam's JIT build misreads the arch list of these machines without this
    export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
    if ! $PY -c "import deepspeed" 2>/dev/null; then
        $PY -m pip install --quiet --no-index --no-deps "$HERE"/wheels/*.whl
    fi
    $PY bench/gpu_train.py
    ;;
*)
    echo "usage: $0 [--prepare|--dry]" >&2
    exit 2
    ;;
esac
