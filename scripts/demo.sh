#!/usr/bin/env bash
# The main job on the embedded default (MNIST-10k): take the shipped teacher (or train one if it
# is missing), evaluate it, distil it into 4 one-step students, assemble the bundle and evaluate
# the students with the same metrics. Resumable: rerunning reuses finished pieces.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/demo}"
# Samples for the evaluations (the teacher needs 35 network evaluations per sample).
N_TEACHER="${MSD_DEMO_TEACHER_N:-500}"
N_STUDENTS="${MSD_DEMO_STUDENTS_N:-1000}"
MSD=target/release/msd
CFG=configs/demo.toml
CLF=results/mnist-classifier
if [ ! -f "$OUT/teacher/train.json" ] && [ -f results/mnist-teacher/model.safetensors ]; then
  $MSD import-teacher --config "$CFG" --out "$OUT" --teacher results/mnist-teacher
fi
$MSD train-teacher --config "$CFG" --out "$OUT"
# Guidance 1.25: the teacher's setting ([sampler] guidance in configs/demo.toml).
$MSD eval --teacher "$OUT/teacher" --n "$N_TEACHER" --guidance 1.25 --classifier "$CLF" --out "$OUT/eval-teacher"
# Small batches: one thread per job is faster than two that contend (measured).
$MSD --threads 1 distill --run "$OUT"
$MSD eval --bundle "$OUT/bundle.json" --n "$N_STUDENTS" --classifier "$CLF" --out "$OUT/eval-students"
echo
echo "demo outputs in $OUT:"
echo "  teacher            $OUT/teacher/ (weights, train.json)"
echo "  teacher eval       $OUT/eval-teacher/{eval.md,eval.json,samples.png}  (Heun-18, 35 NFE)"
echo "  students + router  $OUT/bundle.json (students in $OUT/students/)"
echo "  students eval      $OUT/eval-students/{eval.md,eval.json,samples.png}  (1 NFE)"
echo
cat "$OUT/eval-students/eval.md"
