"""The one definition of every training field: names, defaults, bounds, validation.

The trainer reads it from a JSON or YAML file (`python -m trainers.train --config run.yaml`);
the orchestrator embeds the same class in its settings, so the Launchpad shows every field and a
bad value fails there before any work, with the same message. Only pydantic is needed (DeepSpeed
depends on it), so this folder runs alone on a GPU box.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SOURCES = ("code", "text", "replay")  # the train-<source> shards a mixture can weight


class StudentSize(str, Enum):
    tiny = "tiny"
    phi_1_5 = "phi-1.5"
    phi_2 = "phi-2"


class Schedule(str, Enum):
    cosine = "cosine"
    constant = "constant"
    wsd = "wsd"  # warmup-stable-decay


class Precision(str, Enum):
    auto = "auto"  # bf16 on GPUs and on CPUs with native bf16 (AVX512-BF16, AMX); fp32 elsewhere
    bf16 = "bf16"
    fp32 = "fp32"


_NATIVE_BF16 = {"avx512_bf16", "amx_bf16"}


def native_bf16_cpu(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 natively (on AVX2 alone, bf16 matmuls are emulated). On the
    running machine PyTorch's own kernel level counts too: ATEN_CPU_CAPABILITY=avx2 on an
    AVX-512 machine gives AVX2 kernels, and bf16 is then emulated there as well."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        except OSError:
            return False
        if not _torch_kernels_have_avx512():
            return False
    flags = {flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split()}
    return bool(flags & _NATIVE_BF16)


def _torch_kernels_have_avx512() -> bool:
    try:
        import torch
    except ImportError:
        return True  # no PyTorch here to ask: the flags decide
    return torch.backends.cpu.get_cpu_capability().startswith(("AVX512", "AMX"))


def chosen_precision(precision: str, on_gpu: bool, cpuinfo: str | None = None) -> tuple[str, str]:
    """(bf16 | fp32, why) for a configured precision."""
    if precision != Precision.auto:
        return Precision(precision).value, "as configured"
    if on_gpu:
        return "bf16", "auto: a GPU"
    if native_bf16_cpu(cpuinfo):
        return "bf16", "auto: this CPU has native bf16 (AVX512-BF16 or AMX)"
    return "fp32", "auto: this CPU has no native bf16, so bf16 would be emulated and many times slower"


class TrainConfig(BaseModel):
    """What one training run does. `data_dir` and `out_dir` are set by whoever starts the run."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True, frozen=True, validate_default=True)

    data_dir: str = Field("", description="Packed token folder (meta.json + train-<source>.bin).")
    out_dir: str = Field("", description="Where checkpoints, metrics and the exported model go.")
    size: StudentSize = Field(StudentSize.tiny, description="Student shape.")
    model_overrides: dict[str, float] = Field(
        default_factory=dict, description="PhiConfig fields over the shape, e.g. {num_hidden_layers: 8}."
    )
    init_from: str = Field("", description="HF checkpoint folder to continue pre-training from ('' = scratch).")
    mixture: dict[str, float] = Field(
        default_factory=lambda: {"code": 0.5, "text": 0.5},
        description="Weights over the sources code, text and replay, held exactly over the run (any share).",
    )
    seq_len: int = Field(256, ge=8, description="Packed sequence length.")
    micro_batch_size: int = Field(8, ge=1)
    grad_accum_steps: int = Field(1, ge=1)
    max_steps: int = Field(100, ge=1)
    lr: float = Field(1e-3, gt=0)
    schedule: Schedule = Field(Schedule.cosine, description="cosine, constant or wsd (warmup-stable-decay).")
    warmup_steps: int = Field(10, ge=0)
    warmup_start_ratio: float = Field(
        0.0, ge=0, le=1, description="Re-warm from this fraction of lr (continued pre-training)."
    )
    decay_fraction: float = Field(0.2, gt=0, le=1, description="wsd: last fraction of steps that decays.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Floor of the decay, as a fraction of lr.")
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    zero_stage: int = Field(0, ge=0, le=3, description="DeepSpeed ZeRO stage 0-3 (one CPU process: 0).")
    precision: Precision = Field(
        Precision.auto, description="auto: bf16 on GPUs and on CPUs with native bf16, else fp32; or bf16, fp32."
    )
    loss_chunk_tokens: int = Field(
        4096, ge=0, description="Tokens per chunk of the fused head + loss (0 = full logits)."
    )
    activation_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    compile: bool = Field(True, description="torch.compile each decoder layer on GPUs (fuses LayerNorm, GELU, adds).")
    checkpoint_every: int = Field(0, ge=0, description="Steps between resumable checkpoints (0 = only the end).")
    num_gpus: int = Field(0, ge=0, description="GPUs per node; 0 trains on the CPU in one process.")
    peak_tflops: float = Field(
        989.0, ge=0, description="Dense bf16 peak per GPU, for MFU on GPUs (H100/H200 SXM: 989; 0 = no MFU)."
    )
    log_every: int = Field(
        10, ge=1, description="Steps between progress lines (mean loss, tokens/s, MFU, ETA) and metric writes."
    )
    eval_every: int = Field(
        50, ge=0, description="Steps between held-out evaluations (each valid-<source>) and one at the end (0 = none)."
    )
    eval_batches: int = Field(
        4, ge=1, description="Micro batches per held-out source in each evaluation: the same windows every time."
    )
    export: bool = Field(True, description="Write the Hugging Face folder at the end (benchmarks skip it).")
    seed: int = Field(0)

    @field_validator("model_overrides", mode="after")
    @classmethod
    def _whole_numbers_are_ints(cls, values: dict[str, float]) -> dict[str, float | int]:
        # Launchpad numbers are floats; whole ones become ints (layers, sizes, positions).
        return {k: int(v) if float(v).is_integer() else v for k, v in values.items()}

    @model_validator(mode="after")
    def _fits(self) -> TrainConfig:
        from trainers.data import mixture_shares
        from trainers.model import check_shape

        unknown = sorted(set(self.mixture) - set(SOURCES))
        if unknown:
            raise ValueError(f"training.mixture: unknown source {', '.join(unknown)} ({', '.join(SOURCES)})")
        mixture_shares(self.mixture, self.sequences_per_step(max(1, self.num_gpus)), self.max_steps)
        if not self.init_from:
            check_shape(StudentSize(self.size).value, self.seq_len, self.model_overrides)
        return self

    def sequences_per_step(self, world: int) -> int:
        return self.micro_batch_size * self.grad_accum_steps * world


def describe(error: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming its field (`training.zero_stage = 7: ...`)."""
    lines = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"])
        value = item.get("input")
        if item["type"] == "value_error" and isinstance(value, dict):  # a check across fields
            lines.append(item["msg"].removeprefix("Value error, "))  # that names its fields
        else:
            lines.append(f"{prefix}{field} = {value!r}: {item['msg']}")
    return "; ".join(lines)


def read_config(path: str | Path) -> TrainConfig:
    """A TrainConfig from a JSON or YAML file; a bad or unknown field fails naming it and the file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        values = yaml.safe_load(text) or {}
    else:
        values = json.loads(text)
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as error:
        raise ValueError(f"{path}: {describe(error, 'training.')}") from None
