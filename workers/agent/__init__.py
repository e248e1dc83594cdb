"""The node agent: streams its GPUs' telemetry to the controller, applies its commands,
and falls back to fail-safe power limits when the controller is gone.

Run it with ``greenllm agent --config cluster.yaml --node NAME`` or
:class:`workers.agent.agent.NodeAgent` in an event loop.
"""
