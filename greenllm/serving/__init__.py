"""Clients of inference endpoints (no cluster logic; never imports workers/ or scheduler/).

- :mod:`greenllm.serving.arrivals`: request arrivals (Poisson, bursty, Azure trace files).
- :mod:`greenllm.serving.loadclient`: replay arrivals against an OpenAI-compatible endpoint.
- :mod:`greenllm.serving.report`: what a load run measured.
- :mod:`greenllm.serving.routing`: which replica serves the next request (ingress and sim).
"""
