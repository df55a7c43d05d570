"""Seeds -> prompts -> teacher answers, one batch (date x domain) at a time.

Logic lives in pipeline.generation and pipeline.teacher."""

import contextlib
import json
from pathlib import Path

import dagster as dg
import polars as pl

from assets.metadata import preview, table
from assets.partitions import BATCHES, batch_parts
from assets.resources import Schoolhouse
from pipeline.generation import prompts as prompt_plan
from pipeline.generation import topic_tree
from pipeline.generation.diversity import diversity_report, prompt_repeats
from pipeline.generation.generate import generate
from pipeline.generation.journal import missing_ids
from pipeline.generation.spaces import space_for
from pipeline.rows import KEPT
from pipeline.teacher.serving import serving


# Every batch run materializes `topics`: the pool (limit 1, dagster.yaml) lets one run at a time
# write it, so two batches that start together neither race nor grow the tree twice.
@dg.asset(group_name="generation", kinds={"polars", "vllm"}, pool="shared_tables")
def topics(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse) -> dg.Output[pl.DataFrame]:
    """The topic tree and the personas prompts are drawn from: the shipped topics (plus
    `generation.topics_file`), the seed corpus' categories, Python concepts and personas, grown
    by the teacher up to `generation.topic_leaves` leaves and `generation.teacher_personas`."""
    cfg = schoolhouse.settings
    log_path = schoolhouse.path("logs", "vllm-topic-tree.log")
    tree, report = topic_tree.build(cfg, schoolhouse.folder("journals", "tree"), log_path,
                                    _vllm_line_logger(context))  # fmt: skip
    text_leaves = topic_tree.leaves(tree, "text")
    return dg.Output(
        tree,
        metadata={
            "text_leaves": text_leaves.height,
            "code_leaves": topic_tree.leaves(tree, "code").height,
            "fields": text_leaves["field"].n_unique(),
            "depth": int(tree["depth"].max() or 0),
            "personas": tree.filter(pl.col("kind") == "persona").height,
            "by_source": table(tree.group_by("kind", "source").len().sort("kind", "source")),
            "teacher_topics_added": report.topics.added,
            "teacher_personas_added": report.personas.added,
            "refused": dg.MetadataValue.json({"topics": report.topics.refused, "personas": report.personas.refused}),
            "from_topics_file": cfg.generation.topics_file or "-",
        },
    )


@dg.asset(group_name="generation", kinds={"polars"}, partitions_def=BATCHES)
def prompts(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse,
            topics: pl.DataFrame) -> dg.Output[pl.DataFrame]:  # fmt: skip
    """The batch's plan of teacher requests: combinations no other batch of its domain drew
    (the plan ledger under `plans/`), reproducible for the batch key."""
    cfg = schoolhouse.settings
    g = cfg.generation
    _, domain = batch_parts(context.partition_key)
    space = space_for(domain, g, topics)
    sampling = {"temperature": g.temperature, "top_p": g.top_p, "max_tokens": g.max_tokens}
    seed = prompt_plan.batch_seed(g.seed, context.partition_key)
    ledger = prompt_plan.PlanLedger(schoolhouse.folder("plans"), domain)
    plan = prompt_plan.plan_batch(space, g.samples_per_domain, seed, sampling, cfg.teacher.model, ledger,
                                  str(context.partition_key), g.allow_repeats)  # fmt: skip
    frame = pl.DataFrame(plan.rows)
    context.log.info(f"{space.name}: {frame.height} prompts, {plan.left_before:,} of {plan.possible:,} unused before")
    repeats = prompt_repeats(frame["prompt"])
    coverage = {k: dg.MetadataValue.float(v) if isinstance(v, float) else v for k, v in ledger.coverage(space).items()}
    return dg.Output(
        frame,
        metadata={
            "prompts": frame.height,
            "distinct_prompts": repeats["distinct_prompts"],
            "repeated_share": dg.MetadataValue.float(repeats["repeated_share"]),
            "repeated_prompts": plan.repeats,
            **coverage,
            "space": space.name,
            "possible_prompts": plan.possible,
            "unused_before": plan.left_before,
            "distinct_topics": frame["topic"].n_unique(),
            "distinct_seeds": frame["seed_id"].n_unique(),
            "by_audience_and_style": table(frame.group_by("audience", "style").len().sort("len", descending=True)),
            "preview": preview(frame, ["id", "topic", "audience", "style", "seed_id"]),
        },
    )


@dg.asset(group_name="generation", kinds={"polars", "vllm"}, partitions_def=BATCHES)
def generations(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse,
                prompts: pl.DataFrame) -> dg.Output[pl.DataFrame]:  # fmt: skip
    """Teacher answers for every planned prompt. Each answer is journaled as it arrives, so a
    re-run (after a crash, a kill, a lost server) requests only the missing ids."""
    cfg = schoolhouse.settings
    date, domain = batch_parts(context.partition_key)
    journal = journal_path(schoolhouse, context.partition_key)
    log_path = schoolhouse.path("logs", f"vllm-{date}-{domain}.log")
    plan = prompts.to_dicts()
    # A batch whose answers are all journaled needs no teacher: a managed server is not started.
    needs_teacher = bool(missing_ids([row["id"] for row in plan], journal))
    teacher = serving(cfg.teacher, log_path=log_path, on_line=_vllm_line_logger(context))
    with teacher if needs_teacher else contextlib.nullcontext() as client:
        rows, stats = generate(plan, client, journal, str(context.partition_key), cfg.generation.max_tokens,
                               cfg.teacher.model)  # fmt: skip
    kept_texts = rows.filter(KEPT)["text"]
    kept = kept_texts.len()
    context.log.info(f"{rows.height} rows, {kept} kept, rejections: {json.dumps(stats.by_reason)}")
    return dg.Output(
        rows,
        metadata={
            "rows": rows.height,
            "kept": kept,
            "resumed_from_journal": stats.resumed,
            "requested": stats.requested,
            "peak_requests_in_flight": stats.peak_in_flight,
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "completion_tokens_per_s": dg.MetadataValue.float(round(stats.completion_tokens_per_s, 1)),
            "rejected_by_reason": dg.MetadataValue.json(stats.by_reason),
            # how much the kept answers repeat each other, charted over runs
            **{f"kept_{k}": dg.MetadataValue.float(float(v)) for k, v in diversity_report(kept_texts).items()
               if k != "rows"},
            "preview": preview(rows, ["id", "status", "reason", "completion_tokens", "text"]),
        },
    )


def journal_path(schoolhouse: Schoolhouse, partition_key: str) -> Path:
    """The batch's generation journal: every teacher answer, by id."""
    date, domain = batch_parts(partition_key)
    return schoolhouse.path("journals", date, f"{domain}.jsonl")


def _vllm_line_logger(context: dg.AssetExecutionContext):
    """Server lines worth a person's attention go to the run's log; all go to the log file."""

    def on_line(line: str) -> None:
        if any(word in line for word in ("ERROR", "Error", "WARNING", "startup complete", "Traceback")):
            context.log.info(f"vllm: {line}")

    return on_line

