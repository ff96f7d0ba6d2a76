#!/usr/bin/env bash
# The CUDA path, checked on a machine with an NVIDIA GPU: builds against the same libtorch (the
# PyPI torch wheel of scripts/setup-libtorch.sh, which carries CUDA), checks that the binary sees
# the GPU, runs the test suite, `msd bench`, and a short teacher + distillation run on the GPU,
# and compares it with the same run on the CPU. Everything goes to results/gpu/ (OUT=... to
# change), with summary.md written last.
#
#   scripts/gpu-check.sh            # ~5-10 minutes on one H100, after the libtorch download
#   SKIP_TESTS=1 scripts/gpu-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-results/gpu}"
mkdir -p "$OUT"
log() { echo "gpu-check: $*" | tee -a "$OUT/summary.log" >&2; }
: >"$OUT/summary.log"
status=0
step() { # step NAME CMD... : runs CMD with its output in $OUT/NAME.log, records pass/fail and time
  local name="$1"
  shift
  local t0=$SECONDS
  if "$@" >"$OUT/$name.log" 2>&1; then
    log "$name: ok ($((SECONDS - t0)) s)"
    echo "| $name | ok | $((SECONDS - t0)) |" >>"$OUT/steps.md"
  else
    log "$name: FAILED ($((SECONDS - t0)) s), see $OUT/$name.log"
    echo "| $name | FAILED | $((SECONDS - t0)) |" >>"$OUT/steps.md"
    status=1
  fi
}
echo "| step | result | seconds |" >"$OUT/steps.md"
echo "|---|---|---|" >>"$OUT/steps.md"

{ nvidia-smi || echo "nvidia-smi not found"; } >"$OUT/nvidia-smi.txt" 2>&1
step setup scripts/setup-libtorch.sh
step build scripts/with-torch.sh cargo build --release -p msd-cli
MSD=target/release/msd

# The binary must see the GPU (libtorch_cuda linked, driver found).
cat >"$OUT/tiny.toml" <<'EOF'
seed = 0
[data]
kind = "toy2d"
[model.net]
kind = "mlp"
dim = 2
num_classes = 8
width = 128
depth = 4
[teacher]
steps = 2000
batch_size = 512
checkpoint_every = 500
log_every = 100
[sampler]
steps = 18
[distill]
students = 2
iterations = 400
batch_size = 256
regression_pairs_per_class = 64
checkpoint_every = 200
log_every = 50
EOF
rm -rf "$OUT/run-cuda" "$OUT/run-cpu"
step teacher-cuda "$MSD" train-teacher --config "$OUT/tiny.toml" --out "$OUT/run-cuda" --device cuda
step distill-cuda "$MSD" distill --run "$OUT/run-cuda" --device cuda
step sample-cuda "$MSD" sample --bundle "$OUT/run-cuda/bundle.json" --class 3 --n 64 \
  --out "$OUT/run-cuda/class3.png" --device cuda
step teacher-cpu "$MSD" --threads 8 train-teacher --config "$OUT/tiny.toml" --out "$OUT/run-cpu"
step distill-cpu "$MSD" --threads 8 distill --run "$OUT/run-cpu"

# Preemption on the GPU: SIGTERM mid-distillation, exit 75, resume.
rm -rf "$OUT/run-cuda-term" && mkdir -p "$OUT/run-cuda-term"
cp -r "$OUT/run-cuda/config.toml" "$OUT/run-cuda/teacher" "$OUT/run-cuda-term/"
preempt() {
  "$MSD" distill --run "$OUT/run-cuda-term" --student 0 --device cuda &
  local pid=$! code
  for _ in $(seq 1 600); do
    [ -f "$OUT/run-cuda-term/students/0/dm/checkpoints/latest.json" ] && break
    sleep 0.1
  done
  kill -TERM "$pid"
  wait "$pid"
  code=$?
  echo "exit status after SIGTERM: $code"
  [ "$code" -eq 75 ] || return 1
  "$MSD" distill --run "$OUT/run-cuda-term" --student 0 --device cuda
  cmp "$OUT/run-cuda-term/students/0/dm/model.safetensors" \
    "$OUT/run-cuda/students/0/dm/model.safetensors" &&
    echo "resumed student 0 is byte-identical to the uninterrupted GPU run"
}
step preempt-cuda preempt

# The benchmark (on the GPU where the bench supports --device).
if "$MSD" bench --help 2>/dev/null | grep -q -- "--device"; then
  step bench scripts/with-torch.sh "$MSD" bench --device cuda --out "$OUT/bench"
else
  step bench scripts/with-torch.sh "$MSD" bench --out "$OUT/bench"
fi

# The test suite, built against the same CUDA-carrying libtorch. No test picks CUDA by itself
# today (they pin Device::Cpu for exact, machine-independent numbers); the GPU is exercised by
# the runs above. MSD_TEST_DEVICE is exported for tests that learn to accept it.
if [ -z "${SKIP_TESTS:-}" ]; then
  step tests env MSD_TEST_DEVICE=cuda OMP_NUM_THREADS=4 scripts/with-torch.sh cargo test --release --workspace
fi

{
  echo "# GPU check ($(date -u +%FT%TZ))"
  echo
  echo '```'
  head -n 15 "$OUT/nvidia-smi.txt"
  echo '```'
  echo
  cat "$OUT/steps.md"
  echo
  for r in run-cuda run-cpu; do
    for f in "$OUT/$r/teacher/train.json" "$OUT/$r/students/0/dm/train.json"; do
      [ -f "$f" ] && echo "- $r $(basename "$(dirname "$f")"): $(tr -d '\n ' <"$f")"
    done
  done
  [ -f "$OUT/bench/bench.json" ] && { echo; echo '```json'; cat "$OUT/bench/bench.json"; echo '```'; }
} >"$OUT/summary.md"
rm -rf "$OUT/run-cpu/teacher/checkpoints" "$OUT/run-cuda/teacher/checkpoints" \
  "$OUT"/run-*/students/*/dm/checkpoints "$OUT/run-cuda-term"
log "done (status $status): $OUT/summary.md"
exit "$status"
