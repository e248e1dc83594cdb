"""CLI commands of the controller side; each module defines ``register(group)``.

Loaded by :mod:`greenllm.cli.main` through the ``greenllm.commands`` entry point.
"""
