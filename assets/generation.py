"""Seeds -> prompts -> teacher answers. Logic lives in pipeline.prompts / pipeline.generation."""


import json

import dagster as dg
import polars as pl

from pipeline import prompts as prompt_plan
from pipeline.generation import generate
from pipeline.report import preview, table
from pipeline.resources import Schoolhouse
from pipeline.seeds import CODE_CONCEPTS, TEXT_TOPICS
from pipeline.teacher import TeacherClient


@dg.asset(group_name="generation", kinds={"polars"})
def topics(schoolhouse: Schoolhouse) -> dg.Output[pl.DataFrame]:
    """The seed lists prompts are drawn from: text topics by field, Python concepts."""
    rows = [{"domain": "text", "field": f, "topic": t} for f, ts in TEXT_TOPICS.items() for t in ts]
    rows += [{"domain": "code", "field": "python", "topic": c} for c in CODE_CONCEPTS]
    frame = pl.DataFrame(rows)
    return dg.Output(
        frame,
        metadata={
            "text_topics": len(rows) - len(CODE_CONCEPTS),
            "fields": len(TEXT_TOPICS),
            "code_concepts": len(CODE_CONCEPTS),
        },
    )


@dg.asset(group_name="generation", kinds={"polars"})
def prompts(schoolhouse: Schoolhouse, topics: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """The seeded, reproducible plan of teacher requests, one row per future sample."""
    cfg = schoolhouse.settings
    g = cfg.generation
    text_pool = [(r["field"], r["topic"]) for r in topics.filter(pl.col("domain") == "text").iter_rows(named=True)]
    sampling = {"temperature": g.temperature, "top_p": g.top_p, "max_tokens": g.max_tokens}
    plan = prompt_plan.plan_prompts(
        list(g.domains), g.samples_per_domain, g.seed, sampling, cfg.teacher.model, text_pool
    )
    frame = pl.DataFrame(plan)
    return dg.Output(
        frame,
        metadata={
            "prompts": frame.height,
            "by_domain": table(frame.group_by("domain").len().sort("domain")),
            "preview": preview(frame, ["id", "domain", "topic", "audience", "style"]),
        },
    )


@dg.asset(group_name="generation", kinds={"polars"})
def generations(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse,
                prompts: pl.DataFrame) -> dg.Output[pl.DataFrame]:  # fmt: skip
    """Teacher answers for every planned prompt; resumable through an append-only journal."""
    cfg = schoolhouse.settings
    client = TeacherClient(
        cfg.teacher.urls,
        cfg.teacher.model,
        concurrency=cfg.teacher.concurrency,
        request_timeout_s=cfg.teacher.request_timeout_s,
        connect_timeout_s=cfg.teacher.connect_timeout_s,
    )
    journal = schoolhouse.path("journals", f"{cfg.generation.batch}.jsonl")
    rows, stats = generate(
        prompts.to_dicts(), client, journal, cfg.generation.batch, cfg.generation.max_tokens
    )
    kept = rows.filter(pl.col("status") == "kept").height
    context.log.info(f"{rows.height} rows, {kept} kept, rejections: {json.dumps(stats.by_reason)}")
    return dg.Output(
        rows,
        metadata={
            "rows": rows.height,
            "kept": kept,
            "resumed_from_journal": stats.resumed,
            "requested": stats.requested,
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "completion_tokens_per_s": round(stats.completion_tokens_per_s, 1),
            "rejected_by_reason": dg.MetadataValue.json(stats.by_reason),
            "preview": preview(rows, ["id", "domain", "status", "reason", "text"]),
        },
    )
