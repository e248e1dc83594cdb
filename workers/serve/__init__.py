"""Serving inference on an OpenAI-compatible endpoint, with per-request energy.

- :mod:`workers.serve.engine`: a replica engine: continuous batching over one model on one
  GPU (:mod:`workers.serve.kvbatch`), paced by its simulated GPU on the CPU, per-request
  energy from the GPU's counter (:mod:`workers.serve.request_energy`), request metrics
  (:mod:`workers.serve.replica_metrics`).
- :mod:`workers.serve.pool`: replicas behind one endpoint; weighted least-loaded routing.
- :mod:`workers.serve.openai_app`: the FastAPI app (OpenAI API); :mod:`workers.serve.schemas`
  its bodies, :mod:`workers.serve.text` incremental detokenizing with stop strings.
- :mod:`workers.serve.server`: run it under uvicorn without Ray;
  :mod:`workers.serve.cluster_ingress`: the cluster's ingress, a Ray Serve application in
  front of every inference job's replicas.
"""
