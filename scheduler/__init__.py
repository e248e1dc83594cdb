"""Controller: cluster state, decide(), policies, gRPC servicers, persistence, metrics."""
