"""Release: a Hugging Face model folder with its model card, the curated data as Parquet shards
with a dataset card, and a publisher that uploads them to the hub or writes a local folder."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError

log = logging.getLogger("schoolhouse.release")

CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

A small Phi-style language model trained by schoolhouse on synthetic textbooks and coding
exercises written by a teacher model, then curated (quality rules, generated code run against
its own tests, exact and MinHash deduplication, decontamination against MMLU and HumanEval).

## Model
- Architecture: `PhiForCausalLM` ({{ parameters }} parameters)
- Teacher: `{{ teacher }}`
- Training: {{ steps }} steps with DeepSpeed ZeRO-{{ zero_stage }}, final loss {{ final_loss }}

## Training data
{{ data_summary }}

## Evaluation
| benchmark | score |
|---|---|
{{ eval_table }}

## Intended use and limitations
A research artifact for studying distillation from synthetic data. Small models trained on
little data are not reliable sources of facts, write code that must be tested before use, and
inherit the teacher's biases and errors. Not for decisions about people.
"""

DATASET_TEMPLATE = """---
{{ card_data }}
---

# {{ pretty_name }}

Synthetic textbooks and Python exercises written by `{{ teacher }}` and curated by schoolhouse.
Only rows that passed every stage are included.

## Contents
{{ summary }}

## Columns
`id`, `domain` (code | text), `batch`, `topic`, `audience`, `style`, `template`, `prompt`,
`text`, `teacher_model`, `sampling`, token counts, `finish_reason`, `created_at`, and what
curation measured (`checks`, `minhash_cluster`).
"""


def model_card(model_name: str, license: str, teacher: str, scores: dict[str, float], training: dict,
               data_summary: dict) -> ModelCard:  # fmt: skip
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


def data_summary(rows: pl.DataFrame) -> dict[str, object]:
    """What the card says about the training data: batches, kept tokens, rejection rates."""
    kept = rows.filter(pl.col("status") == "kept")
    total = max(rows.height, 1)

    def rate(prefix: str) -> str:
        return f"{rows.filter(pl.col('reason').str.starts_with(prefix)).height / total:.1%}"

    return {
        "batches": ", ".join(sorted(rows["batch"].unique().to_list())),
        "generated rows": rows.height,
        "kept rows": kept.height,
        "kept tokens": int(kept["completion_tokens"].sum() or 0),
        "teacher tokens": int(rows["completion_tokens"].sum() or 0),
        "rejected by generation checks": rate("generation"),
        "rejected by quality rules and code tests": rate("curation"),
        "duplicate rate (exact + near)": rate("dedup"),
        "contamination rate": rate("decontamination"),
    }


def build_model_folder(model_dir: Path, card: ModelCard, out: Path) -> Path:
    """Config, safetensors, tokenizer, generation_config and README.md in one folder."""
    from transformers import AutoConfig, GenerationConfig

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(model_dir, out)
    if not (out / "generation_config.json").exists():
        GenerationConfig.from_model_config(AutoConfig.from_pretrained(out)).save_pretrained(out)
    card.save(out / "README.md")
    return out


def build_dataset_folder(rows: pl.DataFrame, out: Path, teacher: str, license: str,
                         rows_per_shard: int = 50_000) -> Path:  # fmt: skip
    """The kept rows as `data/train-0000i-of-0000n.parquet` shards with a dataset card."""
    kept = rows.filter(pl.col("status") == "kept").drop("status", "reason", "contamination")
    if out.exists():
        shutil.rmtree(out)
    (out / "data").mkdir(parents=True)
    shards = max(1, -(-kept.height // rows_per_shard))
    for i in range(shards):
        part = kept.slice(i * rows_per_shard, rows_per_shard)
        part.write_parquet(out / "data" / f"train-{i:05d}-of-{shards:05d}.parquet")
    card_data = DatasetCardData(
        license=license, language=["en"], pretty_name="schoolhouse synthetic textbooks",
        task_categories=["text-generation"], tags=["synthetic", "schoolhouse"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
    )  # fmt: skip
    summary = {k: v for k, v in data_summary(rows).items()}
    summary["by domain"] = dict(kept.group_by("domain").len().sort("domain").iter_rows())
    card = DatasetCard.from_template(
        card_data, template_str=DATASET_TEMPLATE, pretty_name="schoolhouse synthetic textbooks",
        teacher=teacher, summary="\n".join(f"- {k}: {v}" for k, v in summary.items()),
    )  # fmt: skip
    card.save(out / "README.md")
    return out


@dataclass
class Published:
    destination: str  # a commit URL on the hub, or a local folder
    remote: bool


def publish(folder: Path, repo_id: str, repo_type: str, token: str | None, local_target: Path,
            endpoint: str | None = None, attempts: int = 4) -> Published:  # fmt: skip
    """Upload `folder` to the hub when a repo id and a token are given, else copy it locally.

    Transient hub errors (connection problems, 429, 5xx) are retried with exponential backoff.
    The token is passed to the client only; it never goes into a log line or a return value."""
    if not (repo_id and token):
        return Published(str(copy_folder(folder, local_target)), remote=False)
    api = HfApi(token=token, endpoint=endpoint)
    for attempt in range(1, attempts + 1):
        try:
            api.create_repo(repo_id, repo_type=repo_type, exist_ok=True)
            commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type,
                                       commit_message="schoolhouse release")  # fmt: skip
            return Published(commit.commit_url, remote=True)
        except (HfHubHTTPError, OSError) as error:
            status = getattr(getattr(error, "response", None), "status_code", None)
            transient = status is None or status == 429 or status >= 500
            if not transient or attempt == attempts:
                raise
            wait = 2**attempt
            log.warning("upload to %s failed (%s), retrying in %ss", repo_id, status or type(error).__name__, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def copy_folder(folder: Path, target: Path) -> Path:
    """Replace `target` with a copy of `folder`; a reader never sees a half-written release."""
    tmp = target.with_name(target.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(folder, tmp)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target
