#!/usr/bin/env bash
# The MSD reproduction on MNIST-10k exactly as it was run for results/mnist: two single-thread
# processes in parallel (the teacher row's 10,000 Heun-18 samples ∥ every student run), then one
# pass that reuses all of it and writes report.md / report.json, and a --retime pass. Resumable: rerun after an
# interruption and finished stages, bundles and evaluations are reused.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-results/mnist}"
MSD=target/release/msd
RUNS=k1,k4,k4-small-tsm,k4-small,k2,k5,k10,k4-random,k4-kmeans
mkdir -p "$OUT"
$MSD --threads 1 experiment mnist --out "$OUT" --only teacher > "$OUT/log-teacher.txt" 2>&1 &
teacher=$!
$MSD --threads 1 experiment mnist --out "$OUT" --only "$RUNS" > "$OUT/log-students.txt" 2>&1
wait "$teacher"
$MSD --threads 1 experiment mnist --out "$OUT"
# Every row timed again in one pass on the otherwise idle machine (the table's timing columns).
$MSD --threads 2 experiment mnist --out "$OUT" --retime
