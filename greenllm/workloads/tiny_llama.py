"""A tiny Llama saved as a Hugging Face model directory, made locally (nothing downloaded):
what an engine that loads standard checkpoints (vLLM) can serve in tests and benchmarks.

Its tokenizer is a byte-level BPE trained on the shipped corpus (vocabulary up to 4,096)
with a ChatML chat template; its weights are random (seeded): it produces text, not
sense. 4 layers, hidden 256, 4 attention heads, 2 KV heads: about 4.5M parameters.

    folder = save_tiny_llama(Path("out/tiny-llama"))   # then: --model out/tiny-llama
"""

from __future__ import annotations

from pathlib import Path

from greenllm.workloads.corpus import corpus_text

#: ChatML: ``<|im_start|>role\\ncontent<|im_end|>\\n`` per message.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def save_tiny_llama(
    folder: Path,
    vocab_size: int = 4096,
    hidden_size: int = 256,
    layers: int = 4,
    max_position_embeddings: int = 2048,
    seed: int = 0,
) -> Path:
    """Build the tiny Llama and save it (bf16 safetensors, tokenizer, chat template) in
    ``folder``; returns ``folder``. Takes about a second."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus_text("train").split("\n\n"), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.bfloat16()  # in place, as for any torch module
    model.save_pretrained(folder)
    return folder
