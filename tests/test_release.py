"""Release: cards load offline, the publisher talks to a hub API and keeps the token out of
everything it writes, and the exam gate stops a below-minimum release."""

import base64
import json
import logging
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from huggingface_hub.errors import HfHubHTTPError

from pipeline.release import cards, folders, publish
from pipeline.rows import SCHEMA, conform

TOKEN = "hf_test_secret_token_value_0123456789"


@pytest.fixture(scope="module")
def tiny_model(embedded_teacher_dir, tmp_path_factory) -> Path:
    """A tiny Phi student saved as the trainer saves it, with the run summary beside it."""
    import torch
    from transformers import AutoTokenizer, PhiConfig, PhiForCausalLM

    out = tmp_path_factory.mktemp("student")
    tokenizer = AutoTokenizer.from_pretrained(embedded_teacher_dir)
    torch.manual_seed(0)
    config = PhiConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=256, tie_word_embeddings=False)  # fmt: skip
    PhiForCausalLM(config).save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    (out / "summary.json").write_text(
        json.dumps({"parameters": 6_400_000, "steps": 3, "final_loss": 9.1, "zero_stage": 2})
    )
    return out / "model"


def curated_rows(n: int = 5) -> pl.DataFrame:
    now = datetime.now(UTC)
    records = [
        {"id": f"r{i}", "domain": "text" if i % 2 else "code", "batch": "2026-11-20|text", "topic": "t",
         "audience": "a", "style": "s", "template": "x", "prompt": "p", "text": f"Some text number {i}.",
         "teacher_model": "m", "sampling": "{}", "prompt_tokens": 3, "completion_tokens": 5,
         "finish_reason": "stop", "created_at": now, "status": "kept" if i < n - 1 else "rejected",
         "reason": None if i < n - 1 else "dedup:exact", "checks": "{}", "minhash_cluster": None,
         "contamination": None, "quality_score": None}
        for i in range(n)
    ]  # fmt: skip
    return conform(pl.DataFrame(records, schema=SCHEMA))


def test_model_and_dataset_folders_load_offline(tiny_model, tmp_path, monkeypatch):
    from huggingface_hub import DatasetCard, ModelCard
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = curated_rows()
    card = cards.model_card("tiny-student", "apache-2.0", "SmolLM2-135M-Instruct",
                              {"mmlu_acc": 0.25, "mmlu_continuation_norm_acc": 0.3, "humaneval_acc": 0.0},
                              json.loads((tiny_model.parent / "summary.json").read_text()),
                              cards.data_summary(rows))  # fmt: skip
    folder = folders.build_model_folder(tiny_model, card, tmp_path / "model")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "README.md"):
        assert (folder / name).exists(), name
    loaded = ModelCard.load(folder / "README.md")
    results = {(r.dataset_name, r.metric_type): r.metric_value for r in loaded.data.eval_results}
    assert results == {("MMLU", "acc"): 0.25, ("MMLU (continuation)", "acc_norm"): 0.3,
                       ("HumanEval", "pass@1"): 0.0}  # fmt: skip
    assert "contamination rate" in loaded.text and "SmolLM2-135M-Instruct" in loaded.text
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = AutoTokenizer.from_pretrained(folder)("Hello", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape[1] == ids.shape[1] + 3

    rows = rows.with_columns(quality_score=pl.Series([1.5, 4.0, 3.5, 2.0, None]),
                             seed_source=pl.Series(["python-stdlib", "wiki-vital", None, "wiki-vital", None]))
    data = folders.build_dataset_folder(
        rows, tmp_path / "data", "SmolLM2-135M-Instruct", "apache-2.0", rows_per_shard=2
    )
    shards = sorted((data / "data").glob("*.parquet"))
    assert [s.name for s in shards] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert pl.concat([pl.read_parquet(s) for s in shards]).height == 4  # kept rows only
    card = DatasetCard.load(data / "README.md")
    assert card.data.pretty_name == "schoolhouse synthetic textbooks"
    # r0 (code) 1.5, r2 (code) 3.5 kept; r1 (text) 4.0, r3 (text) 2.0 kept; r4 rejected
    assert "| code | 2 | 2.50 |" in card.text and "| text | 2 | 3.00 |" in card.text
    assert "share >= 3" in card.text and "rejected for low educational value: 0.0%" in card.text
    assert "`wiki-vital` (2 rows)" in card.text and "CC BY-SA" in card.text  # seed text credited
    assert "`python-stdlib` (1 rows)" in card.text


class FakeHub(BaseHTTPRequestHandler):
    """Answers the few hub endpoints that create_repo and upload_folder call, and records them.
    The first `refusals` repo creations are answered with `refusal_status` instead."""

    calls: list[dict] = []
    refusals = 0
    refusal_status = 503

    def _reply(self, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        FakeHub.calls.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.path == "/api/repos/create" and FakeHub.refusals > 0:
            FakeHub.refusals -= 1
            self.send_response(FakeHub.refusal_status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if self.path == "/api/repos/create":
            return self._reply({"url": f"http://{self.headers['Host']}/someone/tiny"})
        if "/preupload/" in self.path:
            files = json.loads(body)["files"]
            return self._reply({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                          for f in files]})  # fmt: skip
        if "/commit/" in self.path:
            url = f"http://{self.headers['Host']}/someone/tiny/commit/abc123"
            return self._reply({"commitUrl": url, "commitOid": "abc123"})
        return self._reply({})  # /api/validate-yaml: the card's metadata is fine

    def do_GET(self):  # noqa: N802
        FakeHub.calls.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": b""})
        self._reply({})

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub():
    FakeHub.calls, FakeHub.refusals, FakeHub.refusal_status = [], 0, 503
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_publisher_uploads_with_the_token_and_never_writes_it(fake_hub, tmp_path, caplog, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "phi"}')
    (folder / "README.md").write_text("# card")
    caplog.set_level(logging.DEBUG)
    published = publish.publish(folder, "someone/tiny", "model", TOKEN, tmp_path / "local", endpoint=fake_hub)
    assert published.remote and published.destination == f"{fake_hub}/someone/tiny/commit/abc123"
    paths = [c["path"] for c in FakeHub.calls]
    assert "/api/repos/create" in paths and any("/commit/main" in p for p in paths)
    assert all(c["auth"] == f"Bearer {TOKEN}" for c in FakeHub.calls if c["path"].startswith("/api/"))
    commit = next(c["body"].decode() for c in FakeHub.calls if "/commit/" in c["path"])
    uploaded = {json.loads(line)["value"]["path"]: base64.b64decode(json.loads(line)["value"]["content"])
                for line in commit.splitlines() if json.loads(line)["key"] == "file"}  # fmt: skip
    assert uploaded == {"config.json": b'{"model_type": "phi"}', "README.md": b"# card"}
    out = capsys.readouterr()
    assert TOKEN not in caplog.text + out.out + out.err + repr(published)
    assert not (tmp_path / "local").exists()


def test_a_transient_hub_error_is_retried_and_a_refusal_is_not(fake_hub, tmp_path, caplog):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "README.md").write_text("# card")
    FakeHub.refusals = 1  # 503 once, then the hub answers
    published = publish.publish(folder, "someone/tiny", "model", TOKEN, tmp_path / "local", endpoint=fake_hub)
    assert published.remote
    assert [c["path"] for c in FakeHub.calls].count("/api/repos/create") == 2
    assert "failed (503), retrying" in caplog.text

    FakeHub.calls, FakeHub.refusals, FakeHub.refusal_status = [], 5, 400  # a bad request: no retry helps
    with pytest.raises(HfHubHTTPError, match="Bad request"):
        publish.publish(folder, "someone/tiny", "model", TOKEN, tmp_path / "local", endpoint=fake_hub)
    assert [c["path"] for c in FakeHub.calls].count("/api/repos/create") == 1


def test_without_a_token_the_release_is_a_local_folder(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "README.md").write_text("# card")
    published = publish.publish(folder, "someone/tiny", "model", None, tmp_path / "release" / "tiny")
    assert not published.remote and (tmp_path / "release" / "tiny" / "README.md").read_text() == "# card"


def stage_upstream(home: Path, tiny_model: Path) -> None:
    """What earlier runs leave on disk: curated rows, the student and its held-out tokens."""
    from transformers import AutoTokenizer

    from trainers.data import pack, write_meta

    (home / "tables" / "decontaminated" / "2026-11-20").mkdir(parents=True)  # one batch's table
    curated_rows().write_parquet(home / "tables" / "decontaminated" / "2026-11-20" / "text.parquet")
    mix = home / "training_mix"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    shards = {
        "train": pack(["a b c"] * 50, tokenizer, mix, "train"),
        "valid-text": pack(["a b c d e"] * 50, tokenizer, mix, "valid-text"),
    }
    write_meta(mix, str(tiny_model), len(tokenizer), tokenizer.eos_token_id, tokenizer.bos_token_id, shards)
    (home / "pointers").mkdir()
    (home / "pointers" / "student_model.json").write_text(json.dumps({"path": str(tiny_model)}))
    (home / "pointers" / "training_mix.json").write_text(json.dumps({"path": str(mix)}))


@pytest.mark.parametrize("minimum, released", [(0.0, True), (0.99, False)])
def test_exam_gate_blocks_a_below_minimum_release(tiny_model, artifact_home, minimum, released):
    from assets.definitions import defs

    stage_upstream(artifact_home, tiny_model)
    config = {"exam": {"mmlu_limit": 8, "humaneval_limit": 1, "max_new_tokens": 8, "min_mmlu_cloze_acc": minimum},
              "training": {"seq_len": 16}}  # fmt: skip
    selection = dg.AssetSelection.assets("exam_report", "model_card", "dataset_card", "hub_release")
    job = dg.define_asset_job("release_only", selection=selection).resolve(asset_graph=defs.resolve_asset_graph())
    result = job.execute_in_process(run_config={"resources": {"schoolhouse": {"config": config}}},
                                    instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)  # fmt: skip
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}  # fmt: skip
    assert checks["meets_release_minimum"] is released
    assert (artifact_home / "release" / "schoolhouse-student" / "README.md").exists() is released
