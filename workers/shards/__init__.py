"""Shard runners: the real built-in workloads a Ray actor or a node agent drives.

- :mod:`workers.shards.pacing`: pace a CPU shard by its simulated GPU.
- :mod:`workers.shards.train`: synchronous data-parallel training
  (:mod:`workers.shards.checkpoint`: atomic checkpoints).
- :mod:`workers.shards.infer`: a batched-generation inference replica
  (:mod:`workers.shards.decode`: batched greedy decoding with a KV cache).
- :mod:`workers.shards.loadgen`: request arrivals (Poisson, bursty, Azure trace files).
- :mod:`workers.shards.router`: requests across replicas in proportion to throughput.
"""
