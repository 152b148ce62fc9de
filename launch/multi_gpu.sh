#!/usr/bin/env bash
# One host with several GPUs: install the CUDA build of jaxlib, then run as usual; the train step
# is sharded over every visible GPU. Usage: launch/multi_gpu.sh configs/coco.py runs/coco
set -euo pipefail
CONFIG=${1:-configs/coco.py}
WORKDIR=${2:-runs/$(basename "$CONFIG" .py)}
python -c 'import jax; print(jax.devices())' | grep -qi cuda || pip install "jax[cuda12]==0.10.2"
python -m comic_jax.main --config="$CONFIG" --workdir="$WORKDIR" "${@:3}"
