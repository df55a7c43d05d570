"""Loading a model folder for the exam."""

from __future__ import annotations


def load_model(folder, dtype: str = "auto"):
    """A causal LM and its tokenizer for the exam, on the GPU when there is one. `auto` is bf16 on
    a GPU and fp32 on a CPU (bf16 is ~4x faster on CPUs with AMX, but moves scores slightly)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    on_gpu = torch.cuda.is_available()
    chosen = {"auto": torch.bfloat16 if on_gpu else torch.float32, "bfloat16": torch.bfloat16,
              "float32": torch.float32}[dtype]  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=chosen).eval()
    return model.to("cuda") if on_gpu else model, AutoTokenizer.from_pretrained(folder)
