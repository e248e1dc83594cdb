"""The controller: gRPC servicers, cluster state, the control loop, auth and metrics.

:class:`scheduler.server.app.Controller` wires it together; ``greenllm controller``
runs it in the foreground.
"""
