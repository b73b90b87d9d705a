"""Writes a tiny random-weights llama GGUF: a real model file for the llama.cpp backend, made locally."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeplane._extras import require

_WORDS = ("▁", "▁hello", "▁edge", "▁metro", "▁model", "▁the", "▁a", "▁is", "▁world", "▁fast")
_CHAT_TEMPLATE = (
    "{% for message in messages %}<s>{{ message['role'] }}: {{ message['content'] }}</s>"
    "{% endfor %}{% if add_generation_prompt %}<s>assistant: {% endif %}"
)


def write_tiny_llama_gguf(path: Path, *, seed: int = 0, embedding: int = 64, blocks: int = 2) -> Path:
    """Write a llama-architecture GGUF of about half a megabyte with random float32 weights.

    It answers with gibberish, which is all a test of the serving path needs; nothing is downloaded.
    """
    gguf = require("gguf", "llamacpp", "writing a GGUF model file")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    heads = 4
    feed_forward = embedding * 2
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + list(_WORDS)
    token_types = [2, 3, 3] + [6] * 256 + [1] * len(_WORDS)
    vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(256)
    writer.add_embedding_length(embedding)
    writer.add_block_count(blocks)
    writer.add_feed_forward_length(feed_forward)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(embedding // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types(token_types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_chat_template(_CHAT_TEMPLATE)
    writer.add_tensor("token_embd.weight", weights(vocab, embedding))
    writer.add_tensor("output_norm.weight", np.ones(embedding, dtype=np.float32))
    writer.add_tensor("output.weight", weights(vocab, embedding))
    for block in range(blocks):
        prefix = f"blk.{block}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", np.ones(embedding, dtype=np.float32))
        writer.add_tensor(f"{prefix}.ffn_norm.weight", np.ones(embedding, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{prefix}.{name}.weight", weights(embedding, embedding))
        writer.add_tensor(f"{prefix}.ffn_gate.weight", weights(feed_forward, embedding))
        writer.add_tensor(f"{prefix}.ffn_up.weight", weights(feed_forward, embedding))
        writer.add_tensor(f"{prefix}.ffn_down.weight", weights(embedding, feed_forward))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
