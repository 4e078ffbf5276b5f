#!/usr/bin/env bash
# Train the shapes-world base stages on one GPU and export them (fp16 safetensors) to $1 (default: fusionframes/assets/shapes).
# Usage: bash scripts/train_shapes_base.sh [assets_dir] [extra hydra overrides...]
set -euo pipefail
assets=${1:-fusionframes/assets/shapes}; shift || true
py=${PYTHON:-python}
logs=${LOG_DIR:-logs}
$py train.py experiment=shapes/movq trainer=gpu paths.log_dir=$logs hydra.run.dir=$logs/shapes_movq \
  data.datamodule.num_workers=8 trainer.max_time=00:00:03:30 "$@"
rm -rf "$assets/movq" && mkdir -p "$assets" && cp -r $logs/shapes_movq/export/movq "$assets/movq"
$py train.py experiment=shapes/t2i trainer=gpu paths.log_dir=$logs hydra.run.dir=$logs/shapes_t2i \
  model.movq_path="$assets/movq" data.datamodule.num_workers=8 trainer.max_time=00:00:04:30 "$@"
rm -rf "$assets/t2i" && cp -r $logs/shapes_t2i/export/t2i "$assets/t2i"
