#!/usr/bin/env bash
# A TPU VM pod slice: the same command on every worker; jax.distributed.initialize() finds the
# coordinator by itself (--multihost). The workdir must be shared by all workers.
# Usage: launch/tpu_pod.sh TPU_NAME ZONE configs/coco.py /mnt/shared/runs/coco
# With SHARDS=DIR (a folder of comic-jax-convert that every worker can read: NFS, Filestore, a
# Cloud Storage FUSE mount) each worker streams only its rows of every batch from DIR, decoded
# by WORKERS (default 8) Grain processes, instead of every worker decoding the whole data set.
set -euo pipefail
TPU=$1; ZONE=$2; CONFIG=${3:-configs/coco.py}; WORKDIR=${4:-/mnt/shared/runs/coco}
STREAM=""
if [[ -n "${SHARDS:-}" ]]; then
  STREAM="--config.data.name=shards --config.data.path=$SHARDS --config.data.workers=${WORKERS:-8}"
fi
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="
  set -e
  cd ~/comic-jax || git clone https://github.com/YOUR_FORK/comic-jax ~/comic-jax && cd ~/comic-jax
  pip install -q -r requirements.txt 'jax[tpu]==0.10.2'
  python -m comic_jax.main --config=$CONFIG --workdir=$WORKDIR --multihost \
    --config.batch_size=256 --config.eval_batch_size=512 $STREAM"
