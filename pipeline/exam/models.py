"""Loading a model folder for the exam."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pipeline.exam.served import ServedModel, served_model
from trainers.config import native_bf16_cpu

log = logging.getLogger("schoolhouse.exam")


@dataclass(frozen=True)
class ExamModel:
    """The model the exam sits, in the weights it runs in.

    `scorer` ranks the choices of multiple-choice items; `model` does everything else (generation,
    perplexity) and re-checks, in fp32, every item whose two best choices the faster `scorer` put
    within `recheck_margin` nats of each other, so `auto` gives fp32's answers at bf16's speed
    (a bf16 score of a choice moves by far less than the margin; bench/exam.py counts the items
    that still differ)."""

    model: object
    tokenizer: object
    scorer: object
    recheck_margin: float = 0.0

    @property
    def rechecks(self) -> bool:
        return self.scorer is not self.model and self.recheck_margin > 0

    @property
    def dtype(self) -> str:
        served = f"served at {self.scorer.url}" if isinstance(self.scorer, ServedModel) else ""
        return served or str(self.scorer.dtype) + (f" (re-checked in {self.model.dtype})" if self.rechecks else "")


def load_model(folder, dtype: str = "auto", recheck_margin: float = 0.1, served_url: str = "") -> ExamModel:
    """An exam model on the GPU when there is one. `float32` and `bfloat16` run everything in those
    weights; `auto` runs in fp32 and scores choices in bf16 with the fp32 re-check where the hardware
    computes bf16 natively (a GPU, or a CPU with AVX512-BF16/AMX: emulated bf16 on AVX2 is slower
    than fp32). With `served_url` the choices are scored by the vLLM server there (serving the same
    folder) and the rest runs here. One load serves a whole sitting: every task, HumanEval and the
    held-out loss."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    on_gpu = torch.cuda.is_available()
    device = "cuda" if on_gpu else "cpu"
    dtype = getattr(dtype, "value", dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder)

    def weights(kind):
        return AutoModelForCausalLM.from_pretrained(folder, dtype=kind).eval().to(device)

    if served_url:
        main = weights(torch.bfloat16 if dtype == "bfloat16" else torch.float32)
        return ExamModel(main, tokenizer, served_model(served_url))
    if dtype == "auto":
        model = weights(torch.float32)
        if recheck_margin <= 0 or not (on_gpu or native_bf16_cpu()):
            return ExamModel(model, tokenizer, model)
        log.info("exam: choices scored in bf16, re-checked in fp32 within %.2f nats", recheck_margin)
        return ExamModel(model, tokenizer, weights(torch.bfloat16), recheck_margin)
    kind = {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    model = weights(kind)
    return ExamModel(model, tokenizer, model)
