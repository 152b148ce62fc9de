#!/usr/bin/env bash
# One host with several GPUs: install the CUDA build of jaxlib, then run as usual; the train step
# is sharded over every visible GPU. Usage: launch/multi_gpu.sh configs/coco.py runs/coco
# With SHARDS=DIR (a folder of comic-jax-convert) the run streams DIR instead of decoding the
# source into memory; WORKERS (default 8) Grain processes decode its images.
set -euo pipefail
CONFIG=${1:-configs/coco.py}
WORKDIR=${2:-runs/$(basename "$CONFIG" .py)}
STREAM=()
if [[ -n "${SHARDS:-}" ]]; then
  STREAM=(--config.data.name=shards --config.data.path="$SHARDS"
          --config.data.workers="${WORKERS:-8}")
fi
python -c 'import jax; print(jax.devices())' | grep -qi cuda || pip install "jax[cuda12]==0.10.2"
python -m comic_jax.main --config="$CONFIG" --workdir="$WORKDIR" "${STREAM[@]}" "${@:3}"
