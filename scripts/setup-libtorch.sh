#!/usr/bin/env bash
# Installs the pinned PyTorch wheel (which carries libtorch) into a per-machine cache outside the
# repository, once. Idempotent: a complete install is detected by a marker file and reused.
# Prints the venv path on stdout (last line) so callers can capture it.
set -euo pipefail
TORCH_VERSION="${MSD_TORCH_VERSION:-2.11.0}"
CACHE="${MSD_TORCH_HOME:-$HOME/.cache/msd}"
VENV="$CACHE/torch-$TORCH_VERSION"
if [ -f "$VENV/.msd-complete" ]; then
  echo "$VENV"
  exit 0
fi
mkdir -p "$CACHE"
# A half-finished install (interrupted session) is removed and redone.
rm -rf "$VENV"
echo "msd setup: installing torch==$TORCH_VERSION into $VENV (once per machine, ~5 GB)" >&2
PY="${PYTHON:-python3}"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==$TORCH_VERSION" numpy >&2
"$VENV/bin/python" -c "import torch; assert torch.__version__.startswith('$TORCH_VERSION'), torch.__version__" >&2
touch "$VENV/.msd-complete"
echo "$VENV"
