#!/usr/bin/env bash
# Two processes x 2 fake CPU devices on one machine: the multi-host code path without a cluster.
# Usage: launch/multihost_cpu.sh [workdir]
# With SHARDS=DIR (e.g. made by `python -m comic_jax.data.convert --config=configs/synthetic.py
# --output=DIR`) each process streams only its rows of every batch from DIR.
set -euo pipefail
WORKDIR=${1:-runs/multihost_demo}
PORT=${PORT:-12355}
STREAM=()
if [[ -n "${SHARDS:-}" ]]; then
  STREAM=(--config.data.name=shards --config.data.path="$SHARDS" --config.data.workers=0)
fi
export XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_PLATFORMS=cpu
for i in 0 1; do
  python -m comic_jax.main --config=configs/synthetic.py --config.method=bce \
    --workdir="$WORKDIR" --multihost --coordinator_address=127.0.0.1:$PORT \
    --num_processes=2 --process_id=$i "${STREAM[@]}" &
done
wait
