"""The live controller: gRPC servicers over the controller shell, SQLite, auth and metrics.

:class:`scheduler.server.app.Controller` wires it together; ``greenllm controller``
runs it in the foreground.
"""
