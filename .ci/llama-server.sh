#!/usr/bin/env bash
# Builds llama.cpp's llama-server (a real OpenAI-compatible server for the
# remote-model tests) from the llama.cpp sources vendored in the
# llama-cpp-python sdist, once per CPU, and prints the folder it lives in:
#   DIR/bin/llama-server   the server
#   DIR/src                the sources (convert_hf_to_gguf.py and gguf-py)
# The folder is a cache outside the clone; a fresh machine builds it (about
# 15 CPU-minutes on 2 cores). Progress goes to stderr.
set -euo pipefail

VERSION=0.3.36
PYTHON=${PYTHON:-python3}
flags=$(grep -m1 '^flags' /proc/cpuinfo | md5sum | cut -c1-8)
DIR=${RLCHAT_LLAMA_DIR:-$HOME/.cache/rlchat/llama.cpp-$VERSION-$flags}

if [ -x "$DIR/bin/llama-server" ] && "$DIR/bin/llama-server" --version >/dev/null 2>&1; then
  echo "$DIR"
  exit 0
fi

echo "llama-server: building into $DIR (once per machine)" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$work" >&2
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
rm -rf "$DIR"
mkdir -p "$DIR/bin"
mv "$work"/llama_cpp_python-*/vendor/llama.cpp "$DIR/src"
cmake -S "$DIR/src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF >&2
cmake --build "$work/build" --target llama-server -j"$(nproc)" >&2
cp "$work/build/bin/llama-server" "$DIR/bin/llama-server"
echo "$DIR"
