"""Experiments: declarations, the fixed evaluation sets, the comparison with intervals, the data
each arm used, and a real experiment (a trained start and two arms with DeepSpeed on the CPU)
through its Dagster jobs."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from pipeline.exam.perplexity import document_losses
from pipeline.experiments.declaration import experiments, read_experiment
from pipeline.experiments.evaluate import FIXED_SETS
from pipeline.experiments.report import (
    MIN_UNITS,
    START,
    compare,
    confound_lines,
    data_use,
    data_use_lines,
    markdown_table,
    report_markdown,
    summary_lines,
)
from pipeline.experiments.runs import arm_config
from pipeline.generation import spaces
from pipeline.generation.sources import (
    PYTHON_STDLIB,
    WIKI_VITAL,
    in_eval_set,
    open_seeds,
    stdlib_eval_set,
    stdlib_functions,
    wiki_eval_set,
    wiki_vital_summaries,
)
from pipeline.rows import REJECTED_STATUS
from pipeline.settings import resolve
from pipeline.training.replay import replay_documents
from tests.test_curation import PROSE, rows

ROOT = Path(__file__).resolve().parent.parent


def results(values: dict[tuple[str, str], list[float]], per_cluster: int = 1) -> pl.DataFrame:
    return pl.DataFrame([{"arm": arm, "metric": metric, "item": f"{i:04d}", "cluster": str(i // per_cluster),
                          "value": v} for (arm, metric), vs in values.items() for i, v in enumerate(vs)])  # fmt: skip


def test_the_shipped_experiments_declare_what_the_issue_asks():
    shipped = experiments("")
    curation = shipped["curation"]
    assert set(curation.arms) == {"curated", "raw", "curated-passes", "raw-passes"}
    assert curation.row_kinds == ["curated", "raw"] and curation.reference_arm == "raw"
    # the same compute (the experiment's steps), and as a second reading the same passes over each arm's data
    assert curation.arms["curated"].passes == curation.arms["raw"].passes == 0
    assert curation.arms["curated-passes"].passes == curation.arms["raw-passes"].passes > 0
    assert curation.reference_of("curated") == "raw" and curation.reference_of("curated-passes") == "raw-passes"
    forgetting = shipped["forgetting"]
    assert forgetting.start == {"mixture": {"replay": 1.0}} and forgetting.old == "replay"
    assert {a: arm.training["mixture"].get("replay", 0) for a, arm in forgetting.arms.items()} == {
        "finetune": 0, "replay-5": 0.05, "replay-25": 0.25, "scratch": 0.5}  # fmt: skip
    assert forgetting.arms["scratch"].init == "scratch" and forgetting.reference_arm == "finetune"
    pretrained = shipped["forgetting-pretrained"]
    assert pretrained.pretrained and pretrained.start is None and (pretrained.old, pretrained.new) == ("wiki", "code")
    assert {a: (arm.replay, arm.training["mixture"].get("replay", 0)) for a, arm in pretrained.arms.items()} == {
        "finetune": ("", 0), "replay-wiki": ("wiki-vital", 0.25), "self-replay": ("self-replay", 0.25)}  # fmt: skip
    assert pretrained.training["warmup_start_ratio"] == 0 and pretrained.training["schedule"] == "cosine"  # re-warmed
    assert pretrained.exam["mmlu_limit"] >= 2000 and set(pretrained.exam["mmlu_tasks"]) == {"mmlu", "mmlu_continuation"}
    assert not pretrained.uses_replay and pretrained.self_replay_arms == ["self-replay"]
    assert sorted(pretrained.data_kinds) == ["curated", "curated-replay-self-replay", "curated-replay-wiki-vital"]


def test_a_pretrained_experiment_starts_from_init_from_or_the_embedded_model_on_one_budget(artifact_home):
    from pipeline.experiments.runs import start_model, trains_a_start
    from pipeline.teacher.weights import embedded_teacher

    pretrained = experiments("")["forgetting-pretrained"]
    settings = resolve("experiments")
    assert not trains_a_start(settings, pretrained) and start_model(settings, pretrained) == str(embedded_teacher())
    named = resolve("experiments", {"training": {"init_from": "/models/phi-1_5"}})
    assert start_model(named, pretrained) == "/models/phi-1_5"
    runs = {arm: arm_config(settings, pretrained, arm, artifact_home / "data") for arm in pretrained.arms}
    budget = pretrained.training
    for arm, run in runs.items():  # the experiment's budget and schedule, not the profile's, for every arm
        chosen = (run.max_steps, run.seq_len, run.micro_batch_size, run.lr)
        assert chosen == (budget["max_steps"], budget["seq_len"], budget["micro_batch_size"], budget["lr"])
        assert run.data_dir == str(artifact_home / "data" / pretrained.data_kind(arm))
        assert run.init_from == str(embedded_teacher())


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        ({"arms": {"a": {}, "b": {"training": {"max_steps": 5}}}}, r"training.max_steps: set by the experiment"),
        ({"arms": {"a": {}, "b": {"training": {"lr_peak": 1}}}}, r"training.lr_peak: not a training field"),
        ({"arms": {"a": {}, "b": {"rows": "filtered"}}}, r"arms.b.rows = 'filtered': .*'curated' or 'raw'"),
        ({"arms": {"a": {}}}, r"at least two arms"),
        ({"reference": "c", "arms": {"a": {}, "b": {}}}, r"reference = 'c': not one of the arms"),
        ({"old": "books", "arms": {"a": {}, "b": {}}}, r"old = 'books': must be one of code, text, replay"),
        ({"arms": {"a": {}, "b": {}}, "seed": 3}, r"seed = 3: Extra inputs are not permitted"),
        ({"arms": {"a": {}, "b": {"versus": "b"}}}, r"arms.b.versus = 'b': not one of the other arms"),
        ({"arms": {"a": {}, "b": {"passes": -1}}}, r"arms.b.passes = -1: .*greater than or equal to 0"),
        ({"pretrained": True, "start": {}, "arms": {"a": {}, "b": {}}}, r"declare `start` or `pretrained`, not both"),
        ({"arms": {"a": {}, "b": {"replay": "self-replay", "passes": 1}}}, r"arms.b.passes: an arm on self-replay"),
        ({"exam": {"mmlu_items": 5}, "arms": {"a": {}, "b": {}}}, r"exam.mmlu_items: not an exam setting"),
        ({"training": {"init_from": "x"}, "arms": {"a": {}, "b": {}}}, r"training.init_from: set by the experiment"),
        ({"old": "books", "arms": {"a": {}, "b": {}}}, r"old = 'books': must be one of .*wiki, stdlib"),
    ],
)
def test_a_bad_declaration_fails_naming_the_file_and_field(tmp_path, declaration, message):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(declaration))
    with pytest.raises(ValueError, match=message) as error:
        read_experiment(path)
    assert str(path) in str(error.value)


def test_the_fixed_evaluation_sets_are_no_seed_of_generation_and_no_replay_document():
    g = resolve("experiments").generation  # the sources generation opens, through its own path
    seeds = {WIKI_VITAL: spaces.text_seeds(g), PYTHON_STDLIB: spaces.code_seeds(g)}
    assert (g.text_seeds, g.code_seeds) == (WIKI_VITAL, PYTHON_STDLIB)
    for source, whole, held in ((WIKI_VITAL, wiki_vital_summaries(), wiki_eval_set()),
                                (PYTHON_STDLIB, stdlib_functions(), stdlib_eval_set())):  # fmt: skip
        used = seeds[source]
        assert held.height >= 300 and held["seed_id"].is_unique().all()  # several hundred documents
        assert not set(held["seed_id"]) & set(used["seed_id"]) and not set(held["text"]) & set(used["text"])
        assert not set(held["text"]) & set(replay_documents(source, "train", "text", 100_000))
        assert set(held["seed_id"]) | set(used["seed_id"]) <= set(whole["seed_id"])
        assert held.height + used.height >= whole.height - 10  # only repeated texts fall out of both
        assert all(in_eval_set(seed_id) for seed_id in held["seed_id"])
        assert 0.04 < held.height / whole.height < 0.09
    assert open_seeds(WIKI_VITAL, limit=50)["seed_id"].is_in(wiki_eval_set()["seed_id"].implode()).sum() == 0
    # the split is a hash of the seed_id alone, the same on every machine and run
    assert wiki_eval_set()["seed_id"].head(3).to_list() == ["wiki-vital:0", "wiki-vital:Ableism",
                                                            "wiki-vital:Abu Bakr al-Razi"]  # fmt: skip
    assert set(FIXED_SETS) == {"wiki", "stdlib"} and FIXED_SETS["stdlib"]() is stdlib_eval_set()


def test_a_documents_loss_is_its_tokens_after_an_eos_batched_or_not(embedded_teacher_dir):
    import torch
    from transformers import AutoTokenizer, PhiConfig, PhiForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(embedded_teacher_dir)
    torch.manual_seed(0)
    model = PhiForCausalLM(PhiConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                     num_hidden_layers=2, num_attention_heads=4)).eval()  # fmt: skip
    documents = wiki_eval_set()["text"].head(5).to_list() + ["def f():\n    return 1\n", "x"]
    seq_len = 16

    def by_hand(text):  # one unpadded forward pass per piece of seq_len targets
        tokens = [tokenizer.eos_token_id, *tokenizer(text, add_special_tokens=False).input_ids,
                  tokenizer.eos_token_id]  # fmt: skip
        total = 0.0
        for start in range(0, len(tokens) - 1, seq_len):
            ids = torch.tensor([tokens[start : start + seq_len + 1]])
            with torch.no_grad():
                logits = model(input_ids=ids[:, :-1]).logits[0]
            total += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        return total / (len(tokens) - 1)

    losses = document_losses(model, tokenizer, documents, seq_len, batch_size=3)
    assert losses.shape == (len(documents),)
    assert losses == pytest.approx([by_hand(text) for text in documents], rel=1e-4)


def test_a_verdict_needs_an_interval_that_excludes_zero():
    rng = np.random.default_rng(0)
    better = (rng.random(400) < 0.8).astype(float)
    worse = np.where(rng.random(400) < 0.7, 0.0, better)  # the same items, most answers lost
    noise = better.copy()  # a few answers flipped, as many each way
    noise[np.flatnonzero(better == 1)[:6]], noise[np.flatnonzero(better == 0)[:6]] = 0.0, 1.0
    frame = results({("a", "mmlu_mc"): list(better), ("b", "mmlu_mc"): list(worse), ("c", "mmlu_mc"): list(noise),
                     ("a", "heldout_loss_code"): [2.0] * 50, ("b", "heldout_loss_code"): [2.5] * 50,
                     ("c", "heldout_loss_code"): list(2.0 + rng.normal(0, 0.05, 50))})  # fmt: skip
    experiment = read_experiment_from({"reference": "a", "arms": {"a": {}, "b": {}, "c": {}}})
    report = compare(frame, experiment, vocab_size=1000).filter(pl.col("arm") != "a")
    verdicts = {(r["arm"], r["metric"]): r["verdict_vs_reference"] for r in report.iter_rows(named=True)}
    unclear = "no clear difference"
    assert verdicts == {("b", "mmlu_mc"): "worse", ("c", "mmlu_mc"): unclear,
                        ("b", "heldout_loss_code"): "worse", ("c", "heldout_loss_code"): unclear}  # fmt: skip
    b = report.filter((pl.col("arm") == "b") & (pl.col("metric") == "mmlu_mc")).row(0, named=True)
    assert b["delta_vs_reference"] == pytest.approx(worse.mean() - better.mean())
    assert b["low_vs_reference"] < b["delta_vs_reference"] < b["high_vs_reference"] < 0


def test_the_share_of_progress_lost_is_measured_against_the_start():
    # start 3.0 on the old data, uniform guess ln(1000) = 6.91: an arm at 4.0 lost 1/3.91 of it
    frame = results({(START, "heldout_loss_replay"): [3.0] * 20, ("ft", "heldout_loss_replay"): [4.0] * 20,
                     ("cpt", "heldout_loss_replay"): [3.0 + 0.1 * (i % 2) for i in range(20)]})  # fmt: skip
    experiment = read_experiment_from({"old": "replay", "reference": "ft", "arms": {"ft": {}, "cpt": {}}})
    report = compare(frame, experiment, vocab_size=1000)
    lost = {r["arm"]: r for r in report.filter(pl.col("metric") == "progress_lost_replay").iter_rows(named=True)}
    assert lost["ft"]["value"] == pytest.approx(1 / (math.log(1000) - 3.0))
    assert lost["ft"]["verdict_vs_start"] == "lost part of it"
    assert lost["cpt"]["value"] == pytest.approx(0.05 / (math.log(1000) - 3.0))
    assert lost["cpt"]["delta_vs_reference"] == pytest.approx(lost["cpt"]["value"] - lost["ft"]["value"])
    assert lost["cpt"]["verdict_vs_reference"] == "better"  # lost less than fine-tuning, interval below zero
    with pytest.raises(ValueError, match=r"no results yet for arm cpt"):
        compare(frame.filter(pl.col("arm") != "cpt"), experiment, vocab_size=1000)


def test_a_metric_on_one_heldout_document_gets_no_interval_and_no_verdict():
    # the issue's report: raw clearly lower on held-out code, but all its windows come from one document
    frame = results({("curated", "heldout_loss_code"): [2.4 + 0.01 * i for i in range(8)],
                     ("raw", "heldout_loss_code"): [2.0 + 0.01 * i for i in range(8)],
                     ("curated", "mmlu"): [1.0, 0.0] * 5, ("raw", "mmlu"): [0.0, 1.0] * 5}, per_cluster=8)  # fmt: skip
    frame = frame.with_columns(cluster=pl.when(pl.col("metric") == "mmlu").then(pl.col("item")).otherwise("cluster"))
    experiment = read_experiment_from({"reference": "raw", "arms": {"curated": {}, "raw": {}}})
    report = compare(frame, experiment, vocab_size=1000)
    rows = {(r["arm"], r["metric"]): r for r in report.iter_rows(named=True)}
    code = rows[("curated", "heldout_loss_code")]
    assert (code["items"], code["units"], code["unit"]) == (8, 1, "documents")  # 8 windows of one document
    assert code["value"] == pytest.approx(2.435)
    assert code["low"] is None and code["high"] is None and rows[("raw", "heldout_loss_code")]["low"] is None
    assert code["delta_vs_reference"] is None and code["low_vs_reference"] is None
    assert code["verdict_vs_reference"] == "too few held-out documents (1)"
    mmlu = rows[("curated", "mmlu")]
    assert (mmlu["units"], mmlu["unit"], mmlu["verdict_vs_reference"]) == (10, "items", "too few exam items (10)")
    lines = summary_lines(report, experiment)
    assert not any(" is worse than " in line or " is better than " in line for line in lines)
    assert f"heldout_loss_code: too few held-out documents (1), a 95% interval needs at least {MIN_UNITS}: " \
           "no interval, no verdict" in lines  # fmt: skip
    assert any(line.startswith("mmlu: too few exam items (10)") for line in lines)


def test_a_metric_on_enough_documents_still_gets_its_interval_and_verdict():
    rng = np.random.default_rng(1)
    documents = MIN_UNITS + 5
    curated = list(2.4 + rng.normal(0, 0.05, documents * 4))  # 4 windows per document
    raw = list(np.array(curated) - 0.35 + rng.normal(0, 0.1, documents * 4))
    frame = results({("curated", "heldout_loss_code"): curated, ("raw", "heldout_loss_code"): raw}, per_cluster=4)
    experiment = read_experiment_from({"reference": "raw", "arms": {"curated": {}, "raw": {}}})
    report = compare(frame, experiment, vocab_size=1000)
    code = report.filter(pl.col("arm") == "curated").row(0, named=True)
    assert (code["items"], code["units"], code["unit"]) == (documents * 4, documents, "documents")
    assert code["low"] < code["value"] < code["high"]
    delta = np.mean(curated) - np.mean(raw)
    assert code["delta_vs_reference"] == pytest.approx(delta)
    assert 0 < code["low_vs_reference"] < delta < code["high_vs_reference"] and code["verdict_vs_reference"] == "worse"
    [line] = summary_lines(report, experiment)
    assert line.startswith(f"curated is worse than raw on heldout_loss_code: {delta:+.3f} [")


def test_every_row_shows_its_n_in_the_parquet_and_the_markdown_table(tmp_path):
    # held-out code: one document; held-out text: MIN_UNITS + 5 documents, raw clearly lower; 30 exam items
    rng = np.random.default_rng(2)
    text = 3.0 + rng.normal(0, 0.05, (MIN_UNITS + 5) * 2)
    raw = text - 0.3 + rng.normal(0, 0.05, text.size)
    frame = pl.concat([
        results({("curated", "heldout_loss_code"): [2.4] * 6, ("raw", "heldout_loss_code"): [2.0] * 6}, per_cluster=6),
        results({("curated", "heldout_loss_text"): list(text), ("raw", "heldout_loss_text"): list(raw)},
                per_cluster=2),
        results({("curated", "mmlu"): [1.0, 0.0] * 15, ("raw", "mmlu"): [0.0, 1.0] * 15}),
    ])  # fmt: skip
    experiment = read_experiment_from({"reference": "raw", "arms": {"curated": {}, "raw": {}}})
    compare(frame, experiment, vocab_size=1000).write_parquet(tmp_path / "report.parquet")
    report = pl.read_parquet(tmp_path / "report.parquet")
    n = {(r["arm"], r["metric"]): (r["units"], r["unit"]) for r in report.iter_rows(named=True)}
    assert n == {(arm, metric): units for arm in ("curated", "raw") for metric, units in
                 (("heldout_loss_code", (1, "documents")), ("heldout_loss_text", (MIN_UNITS + 5, "documents")),
                  ("mmlu", (30, "items")))}  # fmt: skip
    table = markdown_table(report).splitlines()
    assert len(table) == 2 + report.height and all(line.count("|") == 7 for line in table)
    code = next(line for line in table if line.startswith("| curated | heldout_loss_code |"))
    assert code == (f"| curated | heldout_loss_code | 1 document | 2.400, no interval (n < {MIN_UNITS}) | "
                    "too few held-out documents (1) |  |")  # fmt: skip
    text_row = next(line for line in table if line.startswith("| curated | heldout_loss_text |"))
    assert f"| {MIN_UNITS + 5} documents | " in text_row and text_row.endswith("] worse |  |")
    assert "| 30 items | 0.500 [" in next(line for line in table if line.startswith("| curated | mmlu |"))


def test_the_progress_lost_on_too_few_old_documents_is_not_judged():
    frame = results({(START, "heldout_loss_replay"): [3.0] * 6, ("ft", "heldout_loss_replay"): [4.0] * 6,
                     ("cpt", "heldout_loss_replay"): [3.1] * 6}, per_cluster=2)  # fmt: skip
    experiment = read_experiment_from({"old": "replay", "reference": "ft", "arms": {"ft": {}, "cpt": {}}})
    report = compare(frame, experiment, vocab_size=1000)
    lost = {r["arm"]: r for r in report.filter(pl.col("metric") == "progress_lost_replay").iter_rows(named=True)}
    assert lost["ft"]["value"] == pytest.approx(1 / (math.log(1000) - 3.0)) and lost["ft"]["low"] is None
    assert lost["ft"]["verdict_vs_start"] == lost["cpt"]["verdict_vs_reference"] == "too few held-out documents (3)"
    assert lost["cpt"]["delta_vs_reference"] is None and lost["ft"]["verdict_vs_reference"] is None


def test_data_use_counts_each_arms_unique_tokens_and_passes_over_them(tmp_path):
    for kind, shards in (("curated", {"train-code": 1000, "train-text": 3000}),
                         ("raw", {"train-code": 2000, "train-text": 6000})):  # fmt: skip
        (tmp_path / "data" / kind).mkdir(parents=True)
        meta = {"shards": {name: {"path": f"{name}.bin", "tokens": n, "documents": 10} for name, n in shards.items()}}
        (tmp_path / "data" / kind / "meta.json").write_text(json.dumps(meta))
    for arm, kind in (("curated", "curated"), ("raw", "raw")):
        folder = tmp_path / "arms" / arm
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({"data_dir": str(tmp_path / "data" / kind), "seq_len": 32}))
        (folder / "summary.json").write_text(json.dumps({"steps": 25, "mixture_sequences": {"code": 50, "text": 150}}))
    (tmp_path / "arms" / "untrained").mkdir()
    # a source thinner than one sequence is tiled in its shard: its unique tokens are one copy
    meta = json.loads((tmp_path / "data" / "curated" / "meta.json").read_text())
    meta["shards"]["train-code"] = {"path": "train-code.bin", "tokens": 2000, "documents": 10, "repeated": 2}
    (tmp_path / "data" / "curated" / "meta.json").write_text(json.dumps(meta))
    use = data_use({arm: tmp_path / "arms" / arm for arm in ("curated", "raw", "untrained")})
    rows = {r["arm"]: r for r in use.iter_rows(named=True)}
    assert set(rows) == {"curated", "raw"}  # an arm without a run's files is left out
    # 200 sequences x 32 tokens = 6,400 tokens trained by both arms, on 4,000 and 8,000 unique
    assert (rows["curated"]["trained_tokens"], rows["curated"]["unique_tokens"]) == (6400, 4000)
    assert rows["curated"]["passes"] == pytest.approx(1.6) and rows["raw"]["passes"] == pytest.approx(0.8)
    assert rows["curated"]["passes_by_source"] == "code 1.60, text 1.60" and rows["raw"]["rows"] == "raw"
    said = "raw (raw rows): 6,400 tokens trained on 8,000 unique, 0.80 passes over its data (code 0.80, text 0.80)"
    assert data_use_lines(use)[1] == said
    # the report states what the two arms differ in besides their rows
    experiment = read_experiment_from({"reference": "raw", "arms": {"curated": {}, "raw": {"rows": "raw"}}})
    [confound] = confound_lines(use, experiment)
    assert confound == ("curated against raw: 6,400 and 6,400 tokens trained, 1.60 and 0.80 passes over 4,000 and "
                        "8,000 unique tokens; the same compute, not the same passes: their difference is their "
                        "data's and its repetition's")  # fmt: skip
    report = compare(results({("curated", "mmlu"): [1.0, 0.0] * 15, ("raw", "mmlu"): [0.0, 1.0] * 15}), experiment,
                     vocab_size=1000)  # fmt: skip
    markdown = report_markdown(report, experiment, use, [confound])
    assert f"- {confound}\n" in markdown and "Compared (the table's vs reference): curated with raw." in markdown


def test_an_arm_at_equal_passes_trains_for_its_own_data_and_is_compared_with_its_pair(artifact_home):
    settings = resolve("experiments")
    root = artifact_home / "data"
    for kind, shards in (("curated", {"train-code": 3000, "train-text": 1000}),
                         ("raw", {"train-code": 30000, "train-text": 90000})):  # fmt: skip
        (root / kind).mkdir(parents=True)
        meta = {"shards": {name: {"path": f"{name}.bin", "tokens": n, "documents": 10} for name, n in shards.items()}}
        (root / kind / "meta.json").write_text(json.dumps(meta))
    experiment = read_experiment_from({"reference": "raw", "arms": {
        "curated": {}, "raw": {"rows": "raw"}, "raw-passes": {"rows": "raw", "passes": 2},
        "curated-passes": {"passes": 2, "versus": "raw-passes", "training": {"mixture": {"code": 0.5, "text": 0.5}}},
    }})  # fmt: skip
    runs = {arm: arm_config(settings, experiment, arm, root) for arm in experiment.arms}
    per_step = runs["curated"].sequences_per_step(1) * runs["curated"].seq_len
    assert runs["curated"].max_steps == runs["raw"].max_steps == settings.experiments.max_steps  # the same compute
    # two passes over the tokens of the sources its mixture weights: code and text, or the profile's text alone
    assert settings.training.mixture == {"text": 1.0}
    assert runs["curated-passes"].max_steps == math.ceil(2 * 4000 / per_step)
    assert runs["raw-passes"].max_steps == math.ceil(2 * 90_000 / per_step)
    assert runs["raw-passes"].data_dir == str(root / "raw")
    frame = results({(arm, "mmlu"): [float(i % 2 == (arm == "raw")) for i in range(30)] for arm in experiment.arms})
    report = compare(frame, experiment, vocab_size=1000)
    assert dict(report.select("arm", "reference").iter_rows()) == {
        "curated": "raw", "raw": None, "curated-passes": "raw-passes", "raw-passes": "raw"}  # fmt: skip


def read_experiment_from(values: dict, name: str = "made") -> object:
    from pipeline.experiments.declaration import Experiment

    return Experiment.model_validate({"name": name, **values})


def _decontaminated(home: Path) -> None:
    """The curated rows an experiment reads, as `decontaminated` stores them: kept text and code,
    and rejected rows that only the raw arm sees."""
    code = "### Function\n```python\ndef double(x):\n    return 2 * x\n```\n" * 6
    kept = rows(*[("text", f"{PROSE} {i}") for i in range(30)], *[("code", f"{code}# {i}") for i in range(30)])
    rejected = rows(*[("text", f"buy now {i} " * 40) for i in range(20)], prefix="bad").with_columns(
        status=pl.lit(REJECTED_STATUS), reason=pl.lit("curation:top_2gram_frac"))
    for (domain,), part in pl.concat([kept, rejected]).group_by("domain"):  # one table per batch
        (home / "tables" / "decontaminated" / "2026-11-20").mkdir(parents=True, exist_ok=True)
        part.with_columns(batch=pl.lit(f"2026-11-20|{domain}")).write_parquet(
            home / "tables" / "decontaminated" / "2026-11-20" / f"{domain}.parquet")


def run_declared(folder: Path, name: str, config: dict) -> list[str]:
    """Runs the experiment `name` declared in `folder` through its Dagster jobs, in a process of
    its own (tests/experiment_run.py); every run must succeed. Returns the runs' partitions."""
    env = {**os.environ, "SCHOOLHOUSE_EXPERIMENTS": str(folder), "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "experiment_run.py"), name, json.dumps(config)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [run["partition"] for run in json.loads(done.stdout.strip().splitlines()[-1])]


@pytest.mark.integration
def test_an_experiment_trains_its_start_and_arms_and_reports_from_their_runs(artifact_home, tmp_path):
    folder = tmp_path / "declared"
    folder.mkdir()
    (folder / "tiny.yaml").write_text(yaml.safe_dump({
        "description": "forgetting on two arms", "start": {"mixture": {"replay": 1.0}}, "old": "replay",
        "reference": "finetune",
        "arms": {"finetune": {"training": {"mixture": {"code": 1.0}}},
                 "replay": {"training": {"mixture": {"code": 0.75, "replay": 0.25}}}}}))  # fmt: skip
    _decontaminated(artifact_home)
    config = {"profile": "experiments",
              "training": {"seq_len": 32, "micro_batch_size": 4, "log_every": 2, "replay_max_documents": 60},
              "experiments": {"max_steps": 4, "start_max_steps": 6, "heldout_windows": 8, "resamples": 200},
              "exam": {"mmlu_limit": 6, "humaneval_limit": 1, "max_new_tokens": 16}}  # fmt: skip
    assert run_declared(folder, "tiny", config) == ["tiny", "tiny.finetune", "tiny.replay", "tiny"]

    experiment = artifact_home / "experiments" / "tiny"
    start = json.loads((experiment / "start" / "summary.json").read_text())
    assert start["steps"] == 6 and start["mixture_sequences"] == {"replay": 24}
    for arm, mixture in (("finetune", {"code": 16}), ("replay", {"code": 12, "replay": 4})):
        summary = json.loads((experiment / "arms" / arm / "summary.json").read_text())
        run = json.loads((experiment / "arms" / arm / "run.json").read_text())
        assert summary["steps"] == 4 and summary["mixture_sequences"] == mixture  # the same budget
        assert run["init_from"] == str(experiment / "start" / "model")  # continued from the start
    # the report's numbers are the arms' own results, item for item
    arms = pl.concat([pl.read_parquet(p) for p in (artifact_home / "tables" / "experiment_arm").glob("tiny.*.parquet")])
    report = pl.read_parquet(experiment / "report.parquet")
    measured = report.filter(pl.col("arm") != START, ~pl.col("metric").str.starts_with("progress"))
    for row in measured.iter_rows(named=True):
        mine = arms.filter((pl.col("arm") == row["arm"]) & (pl.col("metric") == row["metric"]))
        assert row["value"] == pytest.approx(mine["value"].mean()) and row["items"] == mine.height
        assert row["units"] == mine["cluster"].n_unique()  # held-out documents or exam items, not windows
        if row["units"] >= MIN_UNITS:
            assert row["low"] <= row["value"] <= row["high"]
        else:  # this tiny run's slices are too small to judge: no interval, and the verdict says why
            assert row["low"] is None and row["verdict_vs_start"].startswith("too few")
    metrics = set(report["metric"])
    assert {"mmlu", "mmlu_continuation", "mmlu_continuation_norm", "humaneval", "heldout_loss_code",
            "heldout_loss_replay", "progress_lost_replay", "heldout_loss_wiki",
            "heldout_loss_stdlib"} <= metrics  # fmt: skip
    # the fixed evaluation sets: every model on every document, one unit each, with an interval
    fixed = report.filter(pl.col("metric").is_in(["heldout_loss_wiki", "heldout_loss_stdlib"]))
    assert fixed.height == 6 and fixed["low"].is_not_null().all()
    assert fixed.filter(pl.col("arm") != START)["low_vs_start"].is_not_null().all()
    assert {(r["metric"], r["units"], r["items"]) for r in fixed.iter_rows(named=True)} == {
        ("heldout_loss_wiki", wiki_eval_set().height, wiki_eval_set().height),
        ("heldout_loss_stdlib", stdlib_eval_set().height, stdlib_eval_set().height)}  # fmt: skip
    assert set(report["arm"]) == {START, "finetune", "replay"}
    markdown = (experiment / "report.md").read_text()
    assert (experiment / "report.png").stat().st_size > 1000 and "# tiny" in markdown
    # both arms trained 4 steps x 4 sequences x 32 tokens on the curated rows; the passes say how often
    for arm in ("finetune", "replay"):
        assert f"- {arm} (curated rows): 512 tokens trained on " in markdown


@pytest.mark.integration
def test_the_pretrained_forgetting_experiment_runs_reduced_through_its_jobs(artifact_home, tmp_path, teacher_url):
    """The shipped `forgetting-pretrained` on a few steps and items: the embedded SmolLM2 as the
    start, its own documents written through vLLM, the report against finetune and the start.
    Two of its three arms: `replay-wiki` trains the way the `forgetting` experiment's replay arms
    do (tested above), and each arm here costs about 25 s of the suite's budget."""
    shipped = yaml.safe_load((ROOT / "pipeline/experiments/declarations/forgetting-pretrained.yaml").read_text())
    del shipped["arms"]["replay-wiki"]
    shipped["training"] |= {"seq_len": 32, "micro_batch_size": 2, "max_steps": 2, "warmup_steps": 1}
    shipped |= {"exam": {"mmlu_limit": 4}, "fixed_set_documents": MIN_UNITS,
                "self_replay": {**shipped["self_replay"], "max_tokens": 24, "heldout": 2}}  # fmt: skip
    folder = tmp_path / "declared"
    folder.mkdir()
    (folder / "small.yaml").write_text(yaml.safe_dump(shipped))
    _decontaminated(artifact_home)
    config = {"profile": "experiments", "teacher": {"mode": "url", "urls": [teacher_url]},
              "experiments": {"heldout_windows": 4, "resamples": 200}}  # fmt: skip
    assert run_declared(folder, "small", config) == ["small", "small.finetune", "small.self-replay", "small"]

    experiment = artifact_home / "experiments" / "small"
    assert not (experiment / "start").exists()  # the pretrained start is not trained here
    [documents] = (experiment / "self-replay").glob("*/documents.parquet")
    written = pl.read_parquet(documents)
    assert written.filter(pl.col("split") == "heldout").height >= 2 and written["text"].str.len_chars().min() > 0
    data = experiment / "data"
    assert json.loads((data / "curated-replay-self-replay" / "meta.json").read_text())["shards"]["valid-replay"][
        "documents"] == written.filter(pl.col("split") == "heldout").height  # fmt: skip
    for arm, mixture in (("finetune", {"code": 4}), ("self-replay", {"code": 3, "replay": 1})):
        summary = json.loads((experiment / "arms" / arm / "summary.json").read_text())
        run = json.loads((experiment / "arms" / arm / "run.json").read_text())
        assert summary["steps"] == 2 and summary["mixture_sequences"] == mixture  # one budget
        assert run["init_from"] == str(artifact_home / "teacher" / "SmolLM2-135M-Instruct") and run["seq_len"] == 32
    report = pl.read_parquet(experiment / "report.parquet")
    rows = {(r["arm"], r["metric"]): r for r in report.iter_rows(named=True)}
    metrics = {"mmlu", "mmlu_continuation_norm", "heldout_loss_wiki", "heldout_loss_stdlib", "heldout_loss_code",
               "heldout_loss_self-replay", "progress_lost_wiki"}  # fmt: skip
    assert metrics <= set(report["metric"])
    assert "humaneval" not in set(report["metric"])
    wiki = rows[("self-replay", "heldout_loss_wiki")]  # against finetune and the start, on the same documents
    assert wiki["units"] == MIN_UNITS and wiki["reference"] == "finetune"
    assert wiki["low_vs_reference"] is not None and wiki["low_vs_start"] is not None
    assert rows[("finetune", "heldout_loss_wiki")]["low_vs_start"] is not None
    assert rows[("finetune", "progress_lost_wiki")]["low"] is not None
