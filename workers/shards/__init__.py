"""Shard runners: the real workloads a node agent drives.

- :mod:`workers.shards.rankenv`: a training rank's command, files and torchrun environment;
  :mod:`workers.shards.rankproc` / :mod:`workers.shards.rayrank`: its process, started here
  or through Ray in the job's shipped working directory; :mod:`workers.shards.rankrun`:
  progress, batch share, pace and stop; :mod:`workers.shards.logtail`: its output, shipped.
- :mod:`workers.shards.pacing`: pace a CPU shard by its simulated GPU.
- :mod:`workers.shards.train`: the former in-process trainer (kept for
  ``benchmarks/bench_shards.py``; jobs run ``examples/train/train_gpt2.py``).
  (:mod:`workers.shards.checkpoint`: its atomic checkpoints).
- :mod:`workers.shards.infer`: a batched-generation inference replica
  (:mod:`workers.shards.decode`: batched greedy decoding with a KV cache).
- :mod:`workers.shards.loadgen`: request arrivals (Poisson, bursty, Azure trace files).
- :mod:`workers.shards.router`: requests across replicas in proportion to throughput.
"""
