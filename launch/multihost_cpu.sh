#!/usr/bin/env bash
# Two processes x 2 fake CPU devices on one machine: the multi-host code path without a cluster.
# Usage: launch/multihost_cpu.sh [workdir]
set -euo pipefail
WORKDIR=${1:-runs/multihost_demo}
PORT=${PORT:-12355}
export XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_PLATFORMS=cpu
for i in 0 1; do
  python -m comic_jax.main --config=configs/synthetic.py --config.method=bce \
    --workdir="$WORKDIR" --multihost --coordinator_address=127.0.0.1:$PORT \
    --num_processes=2 --process_id=$i &
done
wait
