"""greenllm: LLM training and inference under a global power budget (the library)."""
