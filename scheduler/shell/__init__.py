"""The controller shell, once: the live controller and the simulator both run it.

Around the pure core (``decide()``, ``reconcile()``) it keeps what the controller knows
(nodes, GPUs, the command/ack ledger, jobs and shards), accounts every GPU safely for the
budget, learns the power model from telemetry, and persists what a restart must not lose.
Side effects go through two ports (:mod:`scheduler.shell.ports`): a session per agent
stream (gRPC live, an in-memory channel in the simulator) and a store (SQLite live,
memory in the simulator).
"""
