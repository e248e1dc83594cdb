"""Shard runners: the real workloads a node agent drives.

- :mod:`workers.shards.rankenv`: a training rank's command, files and torchrun environment;
  :mod:`workers.shards.rankproc` / :mod:`workers.shards.rayrank`: its process, started here
  or through Ray in the job's shipped working directory; :mod:`workers.shards.rankrun`:
  progress, batch share, pace and stop; :mod:`workers.shards.logtail`: its output, shipped.
- :mod:`workers.shards.pacing`: pace a CPU shard by its simulated GPU (absolute pacing,
  :mod:`greenllm.pacing`; see ``docs/simulated-gpus.md``).
- :mod:`workers.shards.decode`: batched greedy decoding with a KV cache (its left padding
  is the serving engine's, :mod:`workers.serve.kvbatch`).
"""
