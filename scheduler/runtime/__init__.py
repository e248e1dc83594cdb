"""Running greenllm on Ray: the local multi-node cluster, the controller actor, up/down."""
