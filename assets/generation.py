"""Seeds -> prompts -> teacher answers, one batch (date x domain) at a time.

Logic lives in pipeline.generation and pipeline.teacher."""

import contextlib
import json

import dagster as dg
import polars as pl

from assets.metadata import preview, table
from assets.partitions import BATCHES, batch_parts
from assets.resources import Schoolhouse
from pipeline.generation import prompts as prompt_plan
from pipeline.generation.generate import generate
from pipeline.generation.journal import missing_ids
from pipeline.generation.seeds import code_concepts, read_topics_file, text_topics
from pipeline.rows import KEPT
from pipeline.teacher.serving import serving


# Every batch run materializes `topics`: the pool (limit 1, dagster.yaml) lets one run at a time
# write it, so two batches that start together neither race nor grow the tree twice.
@dg.asset(group_name="generation", kinds={"polars"}, pool="shared_tables")
def topics(schoolhouse: Schoolhouse) -> dg.Output[pl.DataFrame]:
    """The seed lists prompts are drawn from: text topics by field (built-in plus the optional
    `generation.topics_file`), and Python concepts."""
    rows = [{"domain": "text", "field": f, "topic": t} for f, ts in text_topics().items() for t in ts]
    topics_file = schoolhouse.settings.generation.topics_file
    if topics_file:
        rows += [{"domain": "text", "field": f, "topic": t}
                 for f, t in read_topics_file(topics_file)]  # fmt: skip
    rows += [{"domain": "code", "field": "python", "topic": c} for c in code_concepts()]
    frame = pl.DataFrame(rows).unique(maintain_order=True)
    text = frame.filter(pl.col("domain") == "text")
    return dg.Output(
        frame,
        metadata={
            "text_topics": text.height,
            "fields": text["field"].n_unique(),
            "code_concepts": frame.height - text.height,
            "from_topics_file": topics_file or "-",
        },
    )


@dg.asset(group_name="generation", kinds={"polars"}, partitions_def=BATCHES)
def prompts(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse,
            topics: pl.DataFrame) -> dg.Output[pl.DataFrame]:  # fmt: skip
    """The seeded, reproducible plan of teacher requests for one batch."""
    cfg = schoolhouse.settings
    g = cfg.generation
    _, domain = batch_parts(context.partition_key)
    pool = [(r["field"], r["topic"]) for r in topics.filter(pl.col("domain") == "text").iter_rows(named=True)]
    sampling = {"temperature": g.temperature, "top_p": g.top_p, "max_tokens": g.max_tokens}
    seed = prompt_plan.batch_seed(g.seed, context.partition_key)
    plan = prompt_plan.plan_prompts(domain, g.samples_per_domain, seed, sampling, cfg.teacher.model, pool)
    frame = pl.DataFrame(plan)
    return dg.Output(
        frame,
        metadata={
            "prompts": frame.height,
            "distinct_topics": frame["topic"].n_unique(),
            "by_audience_and_style": table(frame.group_by("audience", "style").len().sort("len", descending=True)),
            "preview": preview(frame, ["id", "topic", "audience", "style"]),
        },
    )


@dg.asset(group_name="generation", kinds={"polars", "vllm"}, partitions_def=BATCHES)
def generations(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse,
                prompts: pl.DataFrame) -> dg.Output[pl.DataFrame]:  # fmt: skip
    """Teacher answers for every planned prompt. Each answer is journaled as it arrives, so a
    re-run (after a crash, a kill, a lost server) requests only the missing ids."""
    cfg = schoolhouse.settings
    date, domain = batch_parts(context.partition_key)
    journal = schoolhouse.path("journals", date, f"{domain}.jsonl")
    log_path = schoolhouse.path("logs", f"vllm-{date}-{domain}.log")
    plan = prompts.to_dicts()
    # A batch whose answers are all journaled needs no teacher: a managed server is not started.
    needs_teacher = bool(missing_ids([row["id"] for row in plan], journal))
    teacher = serving(cfg.teacher, log_path=log_path, on_line=_vllm_line_logger(context))
    with teacher if needs_teacher else contextlib.nullcontext() as client:
        rows, stats = generate(plan, client, journal, str(context.partition_key), cfg.generation.max_tokens,
                               cfg.teacher.model)  # fmt: skip
    kept = rows.filter(KEPT).height
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
            "preview": preview(rows, ["id", "status", "reason", "completion_tokens", "text"]),
        },
    )


def _vllm_line_logger(context: dg.AssetExecutionContext):
    """Server lines worth a person's attention go to the run's log; all go to the log file."""

    def on_line(line: str) -> None:
        if any(word in line for word in ("ERROR", "Error", "WARNING", "startup complete", "Traceback")):
            context.log.info(f"vllm: {line}")

    return on_line
