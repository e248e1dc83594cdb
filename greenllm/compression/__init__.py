"""Model compression: quantization, pruning, distillation and low-rank factorisation,
each measured (size, held-out perplexity, tokens/s, J/token) against the original.

    from greenllm.compression import compress, parse_methods, CompressOptions
    report = compress("tiny", parse_methods("int8,prune"), Path("out"), CompressOptions())

Compressed models are saved as artifacts that :func:`load_compressed` (and
``greenllm.workloads.load_model``) rebuild.
"""

from greenllm.compression.artifacts import load_compressed, save_compressed
from greenllm.compression.pipeline import METHODS, CompressOptions, compress, parse_methods

__all__ = [
    "METHODS",
    "CompressOptions",
    "compress",
    "load_compressed",
    "parse_methods",
    "save_compressed",
]
