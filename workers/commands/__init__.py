"""CLI commands of the node side; each module defines ``register(group)``.

Loaded by :mod:`greenllm.cli.main` through the ``greenllm.commands`` entry point.
"""
