"""The DeepSpeed trainer on CPU: loss falls, the export loads and generates, held-out losses per
source leave training alone, a killed run resumes to the same loss curve, 2 ZeRO-2 processes
match 1, bad config fails before training."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from pipeline.exam.data import read_humaneval, read_mmlu
from trainers.config import TrainConfig, native_bf16_cpu, read_config
from trainers.data import Mixture, MixtureCounts, PackedTokens, mixture_shares, pack, read_meta, write_meta
from trainers.train import ProgressLog, lr_at, train

pytestmark = pytest.mark.integration


def write_packed_text(out, documents: int = 300):
    """A text-only source from MMLU questions, for runs that only need a trainer to run."""
    from transformers import AutoTokenizer

    from pipeline.teacher.weights import embedded_teacher

    folder = embedded_teacher()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    shards = {"train-text": pack([i.question for i in read_mmlu()[:documents]], tokenizer, out, "train-text")}
    write_meta(out, str(folder), len(tokenizer), tokenizer.eos_token_id, tokenizer.bos_token_id, shards)
    return out


@pytest.fixture(scope="module")
def packed(embedded_teacher_dir, tmp_path_factory):
    """Real English text (MMLU questions) and real Python (HumanEval solutions) packed with the
    student tokenizer into a code and a text source, each with a held-out slice. The text source
    is three batches' files listed in meta.json, as the chain's training mix lists them: every run
    below (the resumed one too) reads windows across their ends."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_teacher_dir)
    documents = [item.question for item in read_mmlu()[:600]]
    code = [p.prompt + p.canonical_solution for p in read_humaneval()]
    out = tmp_path_factory.mktemp("packed")
    batches = [pack(documents[a:b], tokenizer, out / f"batch-{a}", "train-text") for a, b in ((0, 200), (200, 400),
                                                                                            (400, 550))]  # fmt: skip
    text = {"files": [f"batch-{a}/train-text.bin" for a in (0, 200, 400)],
            "tokens": sum(b["tokens"] for b in batches), "documents": sum(b["documents"] for b in batches)}
    shards = {"train-text": text,
              "train-code": pack(code[:150], tokenizer, out, "train-code"),
              "valid-code": pack(code[150:], tokenizer, out, "valid-code"),
              "valid-text": pack(documents[550:], tokenizer, out, "valid-text")}  # fmt: skip
    write_meta(out, str(embedded_teacher_dir), len(tokenizer), tokenizer.eos_token_id,
               tokenizer.bos_token_id, shards)  # fmt: skip
    return out


def test_packing_separates_documents_with_eos(packed):
    meta = read_meta(packed)
    windows = PackedTokens(packed, "train-text", seq_len=64, seed=0)
    eos_count = int((np.asarray(windows.tokens) == meta["eos_token_id"]).sum())
    assert eos_count == meta["shards"]["train-text"]["documents"] == 550
    first, second = windows.next_batch(2)
    assert first.shape == (65,) and not (first == second).all()


def test_trains_with_deepspeed_and_exports_a_loadable_model(packed, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = TrainConfig(data_dir=str(packed), out_dir=str(tmp_path), seq_len=128, micro_batch_size=8,
                      max_steps=30, warmup_steps=5, lr=2e-3, log_every=5, zero_stage=2)  # fmt: skip
    summary = train(cfg)
    assert summary["steps"] == 30
    assert summary["precision"] == ("bf16" if native_bf16_cpu() else "fp32")  # precision: auto
    assert summary["final_loss"] < summary["first_loss"] - 1.0
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 31))
    assert [m["step"] for m in metrics if "tokens_per_s" in m] == [5, 10, 15, 20, 25, 30]

    model = AutoModelForCausalLM.from_pretrained(summary["model_dir"])
    tokenizer = AutoTokenizer.from_pretrained(summary["model_dir"])
    assert model.config.model_type == "phi" and not model.config.tie_word_embeddings
    ids = tokenizer("Which of the following", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 8

    # continued pre-training from the export, re-warming the learning rate from half of it
    more = TrainConfig(data_dir=str(packed), out_dir=str(tmp_path / "continued"),
                       init_from=summary["model_dir"], seq_len=128, max_steps=5, warmup_steps=3,
                       warmup_start_ratio=0.5, lr=2e-3, log_every=5)  # fmt: skip
    continued = train(more)
    assert continued["first_loss"] < summary["first_loss"] - 1.0  # it starts where the export ended
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "continued" / "metrics.jsonl").read_text().splitlines()]
    assert lrs[:3] == pytest.approx([2e-3 * (0.5 + 0.5 * k / 3) for k in (1, 2, 3)])


def test_continues_pretraining_any_causal_lm_checkpoint_keeping_its_architecture(packed, embedded_teacher_dir,
                                                                                  tmp_path):  # fmt: skip
    """training.init_from = the embedded SmolLM2-135M, a Llama: the student stays a Llama."""
    from transformers import AutoModelForCausalLM

    cfg = TrainConfig(data_dir=str(packed), out_dir=str(tmp_path), init_from=str(embedded_teacher_dir), seq_len=64,
                      micro_batch_size=2, max_steps=3, warmup_steps=1, lr=1e-5, log_every=1)  # fmt: skip
    summary = train(cfg)
    assert summary["steps"] == 3 and 130e6 < summary["parameters"] < 140e6
    assert summary["first_loss"] < 6.0  # a trained model on MMLU text; a fresh one starts at ln(49,152) = 10.8
    model = AutoModelForCausalLM.from_pretrained(summary["model_dir"])
    assert model.config.model_type == "llama"
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seq_len": 4096}, r"training.seq_len = 4096: above .*max_position_embeddings \(1024\)"),
        ({"size": "phi-7"}, r"training.size = 'phi-7': Input should be 'tiny', 'phi-1.5' or 'phi-2'"),
        ({"micro_batch_size": 2, "mixture": {"code": 0.01, "text": 0.99}}, r"training.mixture = .*cannot hold code"),
        ({"mixture": {"code": 0.5, "replay": 0.5}}, r"training.mixture.replay > 0 but .* no train-replay shard"),
        ({"schedule": "linear"}, r"training.schedule = 'linear': Input should be 'cosine', 'constant' or 'wsd'"),
        ({"warmup": 3}, r"training.warmup = 3: Extra inputs are not permitted"),
    ],
)
def test_bad_config_fails_before_training_naming_the_field(packed, tmp_path, change, message):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(packed), "out_dir": str(tmp_path), "max_steps": 1, **change}))
    with pytest.raises(ValueError, match=message):
        train(read_config(path))
    assert not (tmp_path / "metrics.jsonl").exists()


def test_schedules_warm_up_then_decay_hold_or_decay_late():
    cosine = TrainConfig(data_dir="", out_dir="", lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cosine) == pytest.approx(0.1)
    assert lr_at(9, cosine) == pytest.approx(1.0)
    assert lr_at(60, cosine) == pytest.approx(0.55)
    assert lr_at(110, cosine) == pytest.approx(0.1)
    constant = TrainConfig(data_dir="", out_dir="", lr=1.0, warmup_steps=10, max_steps=110, schedule="constant")
    assert [lr_at(s, constant) for s in (9, 50, 109)] == [1.0, 1.0, 1.0]
    wsd = TrainConfig(data_dir="", out_dir="", lr=1.0, warmup_steps=10, max_steps=100, schedule="wsd",
                      decay_fraction=0.2, min_lr_ratio=0.0)  # fmt: skip
    assert [lr_at(s, wsd) for s in (10, 79, 80, 90, 100)] == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.0])
    rewarm = TrainConfig(data_dir="", out_dir="", lr=1.0, warmup_steps=10, max_steps=100, warmup_start_ratio=0.5)
    assert lr_at(0, rewarm) == pytest.approx(0.55) and lr_at(9, rewarm) == pytest.approx(1.0)


def _counts(weights: dict, sequences: int, steps: int) -> list[dict[str, int]]:
    counts = MixtureCounts(mixture_shares(weights, sequences, steps), sequences)
    return [counts.next() for _ in range(steps)]


def test_the_run_holds_the_mixture_exactly_even_below_one_sequence_per_step(packed):
    assert _counts({"code": 0.25, "text": 0.75}, 8, 4) == [{"code": 2, "text": 6}] * 4  # fits a step: every step
    steps = _counts({"code": 0.99, "replay": 0.01}, 8, 100)  # 1% of 8 = 0.08 sequences per step
    assert all(sum(step.values()) == 8 for step in steps)
    replay = np.cumsum([step["replay"] for step in steps])
    assert replay[-1] == 8 and all(abs(replay[t] - 0.08 * (t + 1)) < 1 for t in range(100))
    assert _counts({"code": 0.2, "text": 0.8}, 32, 5)[0] in ({"code": 6, "text": 26}, {"code": 7, "text": 25})
    with pytest.raises(ValueError, match=r"5 steps x 2 sequences .* cannot hold code"):
        mixture_shares({"code": 0.05, "text": 0.95}, 2, 5)
    mixture = Mixture(packed, {"code": 0.25, "text": 0.75}, seq_len=64, sequences=8, seed=0)
    steps = [mixture.next_step() for _ in range(5)]
    for picks in steps:
        assert sorted(name for name, _ in picks) == ["code"] * 2 + ["text"] * 6
    state = mixture.state_dict()
    after = [mixture.next_step() for _ in range(3)]
    again = Mixture(packed, {"code": 0.25, "text": 0.75}, seq_len=64, sequences=8, seed=0)
    again.load_state_dict(state)
    assert [again.next_step() for _ in range(3)] == after
    rows = mixture.read(after[0])
    assert rows.shape == (8, 65) and rows.dtype == np.int64


def _metrics(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def test_heldout_losses_per_source_leave_training_alone_and_losses_are_read_a_window_at_a_time(
    packed, tmp_path, monkeypatch, capsys
):
    """Held-out evaluation every 4 steps and at the end: each source's loss in that step's record
    and the summary, on the exam's windows; the training losses are a run's without it. The
    losses come back to the host once a window, not every step, and each line shows its window's mean."""
    from transformers import AutoModelForCausalLM

    from pipeline.exam.perplexity import window_losses

    reads, read = [], ProgressLog.read

    def counted(self):
        if self.pending:
            reads.append([step for step, _, _ in self.pending])
        read(self)

    monkeypatch.setattr(ProgressLog, "read", counted)
    base = {"data_dir": str(packed), "seq_len": 32, "micro_batch_size": 2, "max_steps": 6, "warmup_steps": 1,
            "lr": 3e-3, "log_every": 3, "eval_batches": 2, "precision": "fp32"}  # fmt: skip
    off = train(TrainConfig(**base, out_dir=str(tmp_path / "off"), eval_every=0, export=False))
    assert reads == [[1, 2, 3], [4, 5, 6]]
    reads.clear()
    on = train(TrainConfig(**base, out_dir=str(tmp_path / "on"), eval_every=4))
    assert reads == [[1, 2, 3], [4], [5, 6]]  # the evaluation at step 4 reads what it follows

    with_eval, without = _metrics(tmp_path / "on"), _metrics(tmp_path / "off")
    assert [m["step"] for m in with_eval] == list(range(1, 7))
    assert [m["loss"] for m in with_eval] == [m["loss"] for m in without]
    heldout = {m["step"]: m["heldout_loss"] for m in with_eval if "heldout_loss" in m}
    assert list(heldout) == [4, 6] and all(list(h) == ["code", "text"] for h in heldout.values())
    assert all(math.isfinite(v) and 0 < v < 12 for h in heldout.values() for v in h.values())
    assert on["heldout_loss"] == heldout[6] and off["heldout_loss"] is None
    assert not any("heldout_loss" in m for m in without)
    model = AutoModelForCausalLM.from_pretrained(on["model_dir"])  # the end's weights, scored by the exam's code
    for source in ("code", "text"):
        losses, _ = window_losses(model, packed, f"valid-{source}", 32, max_windows=4)
        assert heldout[6][source] == pytest.approx(losses.mean(), rel=1e-4)

    losses = {m["step"]: m["loss"] for m in without}
    lines = re.findall(r"step (\d+)/6 loss ([\d.]+)", capsys.readouterr().out)
    assert [int(step) for step, _ in lines] == [3, 6, 3, 6]
    for step, shown in lines:
        window = [losses[s] for s in range(int(step) - 2, int(step) + 1)]
        assert float(shown) == pytest.approx(sum(window) / 3, abs=1e-4)


def _run_trainer(config: dict, tmp_path, name: str) -> subprocess.Popen:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "trainers.train", "--config", str(path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


def _losses(out_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_killed_run_resumes_to_the_same_loss_curve(packed, tmp_path):
    """... and to the same held-out losses: the evaluations after the checkpoint run again on the same weights."""
    base = {"data_dir": str(packed), "seq_len": 64, "micro_batch_size": 4, "max_steps": 16, "warmup_steps": 3,
            "lr": 3e-3, "checkpoint_every": 4, "log_every": 2, "eval_every": 6}  # fmt: skip
    straight = _run_trainer({**base, "out_dir": str(tmp_path / "straight")}, tmp_path, "straight")
    assert straight.wait(timeout=600) == 0, straight.stderr.read()[-3000:]

    out = tmp_path / "killed"
    victim = _run_trainer({**base, "out_dir": str(out)}, tmp_path, "killed")
    deadline = time.monotonic() + 600
    while not (out / "metrics.jsonl").exists() or len(_losses(out)) < 10:  # past the step-8 checkpoint
        ended = victim.poll() is not None
        assert not ended and time.monotonic() < deadline, f"ended before it was killed: {victim.stderr.read()[-3000:]}"
        time.sleep(0.2)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert (out / "checkpoints" / "latest").read_text() in {"step8", "step12"}

    resumed = _run_trainer({**base, "out_dir": str(out)}, tmp_path, "resumed")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_step"] in (8, 12)
    assert _losses(out) == _losses(tmp_path / "straight")  # exactly, step by step
    heldout = {m["step"]: m["heldout_loss"] for m in _metrics(out) if "heldout_loss" in m}
    assert list(heldout) == [6, 12, 16] and all(list(h) == ["code", "text"] for h in heldout.values())
    assert heldout == {m["step"]: m["heldout_loss"] for m in _metrics(tmp_path / "straight") if "heldout_loss" in m}


def test_zero2_on_two_processes_matches_one(packed, tmp_path):
    base = {"data_dir": str(packed), "seq_len": 64, "max_steps": 8, "warmup_steps": 2, "lr": 3e-3,
            "zero_stage": 2, "log_every": 100, "precision": "fp32"}  # fmt: skip
    one = _run_trainer({**base, "out_dir": str(tmp_path / "one"), "micro_batch_size": 8}, tmp_path, "one")
    assert one.wait(timeout=600) == 0, one.stderr.read()[-3000:]
    config = tmp_path / "two.json"
    config.write_text(json.dumps({**base, "out_dir": str(tmp_path / "two"), "micro_batch_size": 4}))
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29731",
         "-m", "trainers.train", "--config", str(config)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["world_size"] == 2
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), rel=1e-4)
