"""Node agent (device control, telemetry stream, fail-safe) and shard runners."""
