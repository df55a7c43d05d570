"""Release: a Hugging Face model folder with a model card, published to the hub or a folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

A small Phi-style language model trained by [schoolhouse](https://pypi.org/project/schoolhouse/)
on synthetic textbooks and coding exercises written by a teacher model.

## Model
- Architecture: `PhiForCausalLM` ({{ parameters }} parameters)
- Teacher: `{{ teacher }}`
- Training: {{ steps }} steps with DeepSpeed ZeRO-{{ zero_stage }}, final loss {{ final_loss }}

## Training data
{{ data_summary }}

## Evaluation
| benchmark | accuracy |
|---|---|
{{ eval_table }}

## Intended use and limitations
A research artifact for studying distillation from synthetic data. Small models trained on
little data are not reliable sources of facts, write code that must be tested before use, and
inherit the teacher's biases and errors. Not for decisions about people.
"""


def model_card(
    model_name: str,
    license: str,
    teacher: str,
    scores: dict[str, float],
    training: dict,
    data_summary: dict,
) -> ModelCard:
    evals = []
    for key, dataset, dataset_type, config in (
        ("mmlu_cloze_acc", "MMLU (cloze)", "cais/mmlu", "cloze"),
        ("mmlu_mc_acc", "MMLU (multiple choice)", "cais/mmlu", "multiple_choice"),
        ("humaneval_acc", "HumanEval", "openai_humaneval", None),
    ):
        if key in scores:
            evals.append(EvalResult(
                task_type="text-generation", dataset_type=dataset_type, dataset_name=dataset,
                dataset_config=config, metric_type="pass@1" if "humaneval" in key else "accuracy",
                metric_value=round(scores[key], 4),
            ))  # fmt: skip
    data = ModelCardData(
        model_name=model_name, license=license, library_name="transformers",
        pipeline_tag="text-generation", tags=["phi", "synthetic-data", "schoolhouse"],
        eval_results=evals or None,
    )  # fmt: skip
    return ModelCard.from_template(
        data,
        template_str=CARD_TEMPLATE,
        model_name=model_name,
        teacher=teacher,
        parameters=f"{training.get('parameters', 0) / 1e6:.1f}M",
        steps=training.get("steps"),
        zero_stage=training.get("zero_stage"),
        final_loss=f"{training.get('final_loss', float('nan')):.3f}",
        data_summary="\n".join(f"- {k}: {v}" for k, v in data_summary.items()),
        eval_table="\n".join(f"| {k} | {v:.4f} |" for k, v in scores.items()),
    )


def build_folder(model_dir: Path, card: ModelCard, out: Path) -> Path:
    """Model weights, config, tokenizer and README.md in one folder, ready to upload."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(model_dir, out)
    card.save(out / "README.md")
    return out


def publish_local(folder: Path, target: Path) -> Path:
    tmp = target.with_name(target.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(folder, tmp)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target
