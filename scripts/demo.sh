#!/usr/bin/env bash
# The main job on the embedded default: train a teacher, distil it into K one-step students,
# assemble the bundle, and draw pictures from both. Resumable: rerunning reuses finished pieces.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/demo}"
MSD=target/release/msd
$MSD train-teacher --config configs/toy.toml --out "$OUT"
$MSD distill --run "$OUT"
$MSD sample --teacher "$OUT/teacher" --n 1000 --out "$OUT/samples/teacher.png"
$MSD sample --bundle "$OUT/bundle.json" --n 1000 --out "$OUT/samples/students.png"
echo
echo "demo outputs in $OUT:"
echo "  teacher            $OUT/teacher/ (weights, stats.jsonl, samples/)"
echo "  students + router  $OUT/bundle.json (students in $OUT/students/)"
echo "  pictures           $OUT/samples/teacher.png (Heun-18, 35 NFE) and $OUT/samples/students.png (1 NFE)"
