"""`python -m comic_jax.benchmark`: the benchmark runner's command (comic_jax/cli/benchmark.py;
the runner: comic_jax/training/benchmark.py).

    python -m comic_jax.benchmark --config=configs/synthetic.py --methods=all --seeds=3 \\
        --workdir=runs/bench
    python -m comic_jax.benchmark --config=configs/synthetic.py --preset=modules --seeds=3 \\
        --workdir=runs/bench
"""
if __name__ == '__main__':
  from comic_jax.cli import benchmark
  benchmark.run()
