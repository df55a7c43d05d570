"""The DeepSpeed trainer on CPU: loss falls, the export loads and generates, bad config fails."""

import json

import pytest

from pipeline.exam_data import read_humaneval, read_mmlu
from trainers.data import PackedTokens, pack, read_meta, write_meta
from trainers.train import TrainConfig, lr_at, train

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def packed(embedded_teacher_dir, tmp_path_factory):
    """Real English text (MMLU questions) and real Python (HumanEval solutions) packed with the
    student tokenizer into a code and a text source."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_teacher_dir)
    documents = [item.question for item in read_mmlu()[:600]]
    code = [p.prompt + p.canonical_solution for p in read_humaneval()]
    out = tmp_path_factory.mktemp("packed")
    shards = {"train-text": pack(documents[:550], tokenizer, out, "train-text"),
              "train-code": pack(code, tokenizer, out, "train-code"),
              "valid-text": pack(documents[550:], tokenizer, out, "valid-text")}  # fmt: skip
    write_meta(out, str(embedded_teacher_dir), len(tokenizer), tokenizer.eos_token_id,
               tokenizer.bos_token_id, shards)  # fmt: skip
    return out


def test_packing_separates_documents_with_eos(packed):
    meta = read_meta(packed)
    windows = PackedTokens(packed, "train-text", seq_len=64, seed=0)
    eos_count = int((windows.tokens == meta["eos_token_id"]).sum())
    assert eos_count == meta["shards"]["train-text"]["documents"] == 550
    first, second = windows.next_batch(2)
    assert first.shape == (65,) and not (first == second).all()


def test_trains_with_deepspeed_and_exports_a_loadable_model(packed, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = TrainConfig(data_dir=str(packed), out_dir=str(tmp_path), seq_len=128, micro_batch_size=8,
                      max_steps=30, warmup_steps=5, lr=2e-3, log_every=5, zero_stage=2)  # fmt: skip
    summary = train(cfg)
    assert summary["steps"] == 30
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


def test_sequence_longer_than_positions_fails_naming_the_field(packed, tmp_path):
    cfg = TrainConfig(data_dir=str(packed), out_dir=str(tmp_path), seq_len=4096, max_steps=1)
    with pytest.raises(ValueError, match=r"training.seq_len = 4096: above .*max_position_embeddings"):
        train(cfg)


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(data_dir="", out_dir="", lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55)
    assert lr_at(110, cfg) == pytest.approx(0.1)
