"""The greenllm command-line interface (see :mod:`greenllm.cli.main`)."""
