#!/usr/bin/env bash
# The MSD reproduction on MNIST-10k over three training seeds (issue 10): the teacher row and one
# single-thread process per seed in parallel, then one pass that reuses all of it and writes
# report.md / report.json / fd_vs_k.png / fd_vs_iterations.png, and a --retime pass on an idle
# machine. Resumable: rerun after an interruption and finished stages, bundles and evaluations are
# reused; a single run (row) can be trained on its own with `--only NAME --seeds S`. The runs the
# config drops (`[dropped]`) are not trained. Cost: about 40 core-hours of training for the three
# seeds (the train s column of results/mnist/report.md, 2-core machines under load).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-results/mnist}"
MSD=target/release/msd
RUNS=k1,k4,k4-small-tsm,k4-small,k2,k5,k10,k4-random,k4-kmeans,c1,c2,c5,c10,k1-x4,c4,c1-x4,k1-x10,c1-x10,c2-x4,c2-x10,k1-dmx,k4-dmx,k4-noreg
mkdir -p "$OUT"
$MSD --threads 1 experiment mnist --out "$OUT" --only teacher > "$OUT/log-teacher.txt" 2>&1 &
pids=($!)
for s in 0 1 2; do
  $MSD --threads 1 experiment mnist --out "$OUT" --seeds "$s" --only "$RUNS" > "$OUT/log-seed$s.txt" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
$MSD --threads 1 experiment mnist --out "$OUT" --seeds 0,1,2
# Every row timed again in one pass on the otherwise idle machine (the table's timing columns).
$MSD --threads 2 experiment mnist --out "$OUT" --seeds 0,1,2 --retime
