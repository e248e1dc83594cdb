"""gRPC plumbing shared by the controller, the node agents and the CLI.

- :mod:`greenllm.rpc.auth`: bearer tokens (generation, storage, metadata).
- :mod:`greenllm.rpc.channel`: channel/server options and TLS credentials.
- :mod:`greenllm.rpc.client`: the typed cluster-API client with timeouts.
"""
