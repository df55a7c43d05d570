"""The student: transformers' PhiForCausalLM in named shapes.

Phi is parallel attention + MLP in one residual block, partial rotary embeddings, LayerNorm,
gelu_new and an untied output head. `tiny` is for CPU runs; `phi-1.5` and `phi-2` are the
published shapes (1.42B and 2.78B parameters with the 51,200-token vocabulary).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PhiConfig

SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                 num_attention_heads=4, partial_rotary_factor=0.5, max_position_embeddings=1024),
    "phi-1.5": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                    num_attention_heads=32, partial_rotary_factor=0.5, max_position_embeddings=2048),
    "phi-2": dict(hidden_size=2560, intermediate_size=10240, num_hidden_layers=32,
                  num_attention_heads=32, partial_rotary_factor=0.4, max_position_embeddings=2048),
}  # fmt: skip


def check_shape(size: str, seq_len: int, overrides: dict[str, Any]) -> None:
    """The errors a run would otherwise meet only after loading data and building the model."""
    if size not in SHAPES:
        raise ValueError(f"training.size = {size!r}: must be one of {', '.join(SHAPES)}")
    if overrides:  # transformers takes seconds to import: every step's settings pass through here
        from transformers import PhiConfig

        known = PhiConfig().to_dict()
        for key in overrides:
            if key not in known:
                raise ValueError(f"training.model_overrides.{key}: not a PhiConfig field")
    positions = {**SHAPES[size], **overrides}["max_position_embeddings"]
    if seq_len > positions:
        raise ValueError(
            f"training.seq_len = {seq_len}: above the model's max_position_embeddings ({positions}) for size {size!r}"
        )


def phi_config(size: str, vocab_size: int, bos_token_id: int, eos_token_id: int, **overrides: Any) -> PhiConfig:
    from transformers import PhiConfig

    if size not in SHAPES:
        raise ValueError(f"training.size = {size!r}: must be one of {', '.join(SHAPES)}")
    values = dict(
        SHAPES[size],
        vocab_size=vocab_size,
        hidden_act="gelu_new",
        tie_word_embeddings=False,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attention_dropout=0.0,
        layer_norm_eps=1e-5,
        rope_theta=10000.0,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
    )
    values.update(overrides)
    return PhiConfig(**values)


def parameter_count(config: PhiConfig) -> int:
    """Exact count for the Phi block layout, without building the model."""
    d, f, layers, vocab = (config.hidden_size, config.intermediate_size,
                           config.num_hidden_layers, config.vocab_size)  # fmt: skip
    attention = 4 * (d * d + d)  # q, k, v, dense with biases
    mlp = d * f + f + f * d + d
    block = attention + mlp + 2 * d  # one LayerNorm per block (parallel attention + MLP)
    return vocab * d + layers * block + 2 * d + d * vocab + vocab  # embed, blocks, final LN, head
