#!/usr/bin/env bash
# Paper Tables 1-3 in miniature on one GPU: train one table's runs side by side (each a job of the Hydra
# multirun experiment=ablation/<table>, equal budgets), then evaluate them all in one table.
#
#   bash scripts/ablation.sh keyframes "1 2 3"       # Table 1: 4 variants x seeds   -> text_to_video metrics
#   bash scripts/ablation.sh interpolation "1 2 3"   # Table 2: FusionFrames vs MFI   -> in-between PSNR + time
#   bash scripts/ablation.sh decoder "1 2 3"         # Table 3: 8 decoder rows        -> PSNR/SSIM/MSE/params
#   uv run python scripts/collect_results.py <OUT>/*/metrics.json      # -> docs/results.md
#
# Environment: STEPS (training steps of every run; default: the experiment's), WORKERS (data workers per run,
# default 1), MAX_TIME (safety stop per run, DD:HH:MM:SS; a run it stops has fewer steps, which
# collect_results.py flags), LOGS (log dir, default logs), OUT (evaluation output, default outputs/ablation),
# PY (python command, default python), TRAINER (trainer config, default gpu; cpu for a smoke test),
# TRAIN (extra train.py overrides), EVAL (extra evaluate.py overrides), ONLY (train only the jobs whose
# overrides match this extended regex, e.g. ONLY=mfi to redo failed runs; evaluation still covers every run),
# PARALLEL (most runs at a time, default all: a run starts when one ends).
set -euo pipefail
table=${1:?usage: scripts/ablation.sh <keyframes|interpolation|decoder> [seeds]}
seeds=${2:-"1 2 3"}
py=${PY:-python}
logs=${LOGS:-logs}
out=${OUT:-outputs/ablation}
case $table in
  keyframes)
    task=text_to_video
    jobs=("model/temporal=conv1d_attn1d_blocks" "model/temporal=conv1d_attn3d_blocks"
          "model/temporal=conv3d_attn1d_blocks" "model/temporal=conv1d_attn1d_layers") ;;
  interpolation)
    task=interpolation
    jobs=("model.mode=fusionframes" "model.mode=mfi") ;;
  decoder)
    task=decoder
    jobs=("model/decoder=conv3x1x1 model.finetune=temporal" "model/decoder=conv3x3x3 model.finetune=temporal")
    for variant in conv3x1x1 conv3x3x3 conv3x1x1_attn conv3x3x3_attn resblock_attn conv2d_to_3d; do
      jobs+=("model/decoder=$variant model.finetune=decoder")
    done ;;
  *) echo "unknown table $table; choose keyframes, interpolation or decoder" >&2; exit 2 ;;
esac
mkdir -p "$out/$table"
start=$SECONDS
launched=0
failed=0
for seed in $seeds; do
  for job in "${jobs[@]}"; do
    if [ -n "${ONLY:-}" ] && ! echo "$job" | grep -qE "$ONLY"; then continue; fi
    while [ "$(jobs -rp | wc -l)" -ge "${PARALLEL:-1000}" ]; do wait -n || failed=$((failed + 1)); done
    name="$(echo "$job" | tr ' /=' '___')_seed$seed"
    # shellcheck disable=SC2086  # $job and the optional overrides are word lists
    $py train.py experiment=ablation/$table trainer=${TRAINER:-gpu} seed=$seed $job paths.log_dir="$logs" \
      data.datamodule.num_workers=${WORKERS:-1} callbacks.progress_bar.refresh_rate=0 \
      ${STEPS:+trainer.max_steps=$STEPS} ${MAX_TIME:+trainer.max_time=$MAX_TIME} ${TRAIN:-} \
      > "$out/$table/train_$name.log" 2>&1 &
    launched=$((launched + 1))
  done
done
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || failed=$((failed + 1)); done
echo "trained $launched runs of $table in $((SECONDS - start)) s; $failed failed"
if [ "$failed" -gt 0 ]; then
  grep -l -E "Error|Traceback" "$out/$table"/train_*.log | head -3 | xargs -r tail -n 20
  exit 1
fi
start=$SECONDS
# shellcheck disable=SC2086
$py evaluate.py evaluation=$task "runs=[$logs/ablation/$table/*]" output_dir="$out/$table" ${EVAL:-}
echo "evaluated $table in $((SECONDS - start)) s"
