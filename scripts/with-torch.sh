#!/usr/bin/env bash
# Runs a command with the cached PyTorch (libtorch) on PATH, installing it first if missing.
# Usage: scripts/with-torch.sh cargo build --release
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$("$here/setup-libtorch.sh" | tail -n 1)"
export LIBTORCH_USE_PYTORCH=1
export PATH="$venv/bin:$PATH"
# The PyTorch peer scripts (benchmarks) find their interpreter here.
export MSD_TORCH_PYTHON="$venv/bin/python"
exec "$@"
