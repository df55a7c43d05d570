import os

import dagster as dg
import pytest

from assets.resources import Schoolhouse
from pipeline import settings

# What a GPU profile needs from its user: a teacher and a student tokenizer.
YOURS = {"teacher": {"urls": ["http://gpu-host:8000/v1"], "model": "Qwen2.5-72B-Instruct"},
         "training": {"tokenizer": "/models/phi-1_5"}}  # fmt: skip


def test_every_profile_resolves():
    for name in settings.PROFILES:
        resolved = settings.resolve(name, YOURS)
        assert resolved.profile == name
    assert settings.resolve("phi-1.5", YOURS).training.size == "phi-1.5"
    assert settings.resolve("phi-2", YOURS).training.seq_len == 2048
    assert settings.resolve("phi-2", YOURS).exam.min_mmlu_cloze_acc > 0.25  # a release gate above chance


@pytest.mark.parametrize("profile", ["phi-1.5", "phi-2"])
def test_a_gpu_profile_names_each_value_it_needs_from_you(profile, tmp_path):
    with pytest.raises(settings.ConfigError) as error:
        settings.resolve(profile, {"training": {"tokenizer": "/models/phi-1_5"}})
    message = str(error.value)
    assert f"profile {profile} needs your values for: teacher.urls (" in message
    assert "teacher.model (" in message and "training.tokenizer" not in message
    assert f"extends: {profile}" in message
    mine = tmp_path / "mine.yaml"  # the same values from a profile file of the user's
    mine.write_text(f"extends: {profile}\nteacher: {{urls: [http://gpu-host:8000/v1], model: Qwen}}\n"
                    "training: {tokenizer: /models/phi-1_5}\n")  # fmt: skip
    assert settings.resolve(str(mine)).teacher.model == "Qwen"
    assert settings.resolve(profile, complete=False).teacher.model == "SmolLM2-135M-Instruct"  # asks no teacher


def test_unknown_profile_names_the_allowed_ones():
    with pytest.raises(settings.ConfigError) as error:
        settings.resolve("huge")
    message = str(error.value)
    assert "profile = 'huge'" in message
    for name in settings.PROFILES:
        assert name in message


def test_invalid_value_names_field_and_allowed_values():
    with pytest.raises(settings.ConfigError) as error:
        settings.resolve("demo", {"training": {"size": "enormous"}})
    message = str(error.value)
    assert "training.size = 'enormous'" in message
    assert "'tiny', 'phi-1.5' or 'phi-2'" in message

    with pytest.raises(settings.ConfigError, match=r"generation.samples_per_domain = 0: .*greater than or equal to 1"):
        settings.resolve("demo", {"generation": {"samples_per_domain": 0}})
    with pytest.raises(settings.ConfigError, match=r"exam.no_such_knob"):
        settings.resolve("demo", {"exam": {"no_such_knob": 1}})


@pytest.mark.parametrize(
    ("training", "message"),
    [
        ({"seq_len": 4096}, r"training.seq_len = 4096: above the model's max_position_embeddings \(1024\)"),
        ({"seq_len": 4096, "model_overrides": {"max_position_embeddings": 4096}}, None),
        ({"model_overrides": {"num_layerz": 2}}, r"training.model_overrides.num_layerz: not a PhiConfig field"),
        ({"micro_batch_size": 2, "max_steps": 10, "mixture": {"code": 0.01, "text": 0.99}},
         r"training.mixture = .*cannot hold code"),
        ({"mixture": {"code": 1, "books": 1}}, r"training.mixture: unknown source books"),
        ({"mixture": {"text": 0.9, "replay": 0.1}}, r"training.replay_path: required"),
        ({"hostfile": "hosts"}, r"training.hostfile: multi-node runs need training.num_gpus"),
        ({"schedule": "linear"}, r"training.schedule = 'linear': .*'cosine', 'constant' or 'wsd'"),
    ],
)
def test_training_config_that_cannot_run_fails_before_any_work(training, message):
    if message is None:
        assert settings.resolve("demo", {"training": training}).training.seq_len == training["seq_len"]
        return
    with pytest.raises(settings.ConfigError, match=message):
        settings.resolve("demo", {"training": training})


def test_override_keeps_other_profile_values():
    resolved = settings.resolve("phi-1.5", {**YOURS, "training": {**YOURS["training"], "max_steps": 7}})
    assert resolved.training.max_steps == 7
    assert resolved.training.size == "phi-1.5"


def test_resource_resolves_launchpad_overrides():
    resource = Schoolhouse(profile="demo", training={"zero_stage": 3})
    assert resource.settings.training.zero_stage == 3


def test_a_component_section_overrides_one_threshold_and_keeps_the_rest(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("extends: phi-1.5\ncuration:\n  quality:\n    threshold: 2.5\n")
    resolved = settings.resolve(str(mine), {**YOURS, "curation": {"gopher": {"min_words": 80}}})
    assert resolved.curation.quality.threshold == 2.5
    assert (resolved.curation.quality.sample, resolved.curation.quality.min_score) == (500, 3.0)  # from phi-1.5
    assert resolved.curation.gopher.min_words == 80 and resolved.curation.gopher.max_words == 100_000


def test_a_flat_name_from_before_the_components_is_read_under_its_new_name(tmp_path, caplog):
    old = tmp_path / "old.yaml"
    old.write_text("curation:\n  min_quality: 2.0\n  sandbox: unconfined\n  minhash_bands: 14\n")
    with caplog.at_level("WARNING"):
        resolved = settings.resolve(str(old), {"curation": {"quality_sample": 5}})
    c = resolved.curation
    assert (c.quality.min_score, c.sandbox.mode, c.minhash.bands, c.quality.sample) == (2.0, "unconfined", 14, 5)
    assert "curation.min_quality is now curation.quality.min_score" in caplog.text
    assert "curation.quality_sample is now curation.quality.sample" in caplog.text
    for old_name, new_name in settings.RENAMED.items():  # every new name exists
        _, *path = new_name.split(".")
        model = settings.CurationSettings
        for part in path:
            model = model.model_fields[part].annotation
        assert old_name.count(".") == 1


def test_a_bad_component_value_names_its_whole_path():
    with pytest.raises(settings.ConfigError, match=r"curation.minhash.bands = 0: Input should be greater than"):
        settings.resolve("demo", {"curation": {"minhash": {"bands": 0}}})
    with pytest.raises(settings.ConfigError, match=r"curation.gopher.min_word = 3: Extra inputs"):
        settings.resolve("demo", {"curation": {"gopher": {"min_word": 3}}})


def test_the_launchpad_shows_each_components_knobs_with_their_descriptions():
    schema = Schoolhouse.to_config_schema().as_field().config_type
    curation = schema.fields["curation"].config_type
    gopher = curation.fields["gopher"].config_type
    assert gopher.fields["min_words"].description == "Text rows with fewer words are rejected."
    assert "bubblewrap" in curation.fields["sandbox"].config_type.fields["mode"].description
    resource = Schoolhouse(profile="demo", curation={"quality": {"sample": 3}, "gopher": {"min_words": 9}})
    assert resource.settings.curation.quality.sample == 3 and resource.settings.curation.gopher.min_words == 9
    assert resource.settings.curation.gopher.max_words == 100_000


def test_definitions_load_with_every_stage():
    from assets.definitions import defs

    dg.Definitions.validate_loadable(defs)
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {
        "topics", "prompts", "generations", "curated", "quality_labels", "deduped", "embeddings", "semantic_deduped",
        "quality_classifier", "quality_scored", "decontaminated", "token_shards",
        "training_mix", "student_model", "exam_report", "model_card", "dataset_card", "hub_release",
        "experiment_data", "experiment_start", "experiment_arm", "experiment_report",
    }  # fmt: skip
    arms = defs.resolve_assets_def("experiment_arm").partitions_def.get_partition_keys()
    assert {"curation.curated", "curation.raw", "forgetting.finetune", "forgetting.replay-25"} <= set(arms)
    weekly = defs.resolve_job_def("train_and_release").asset_layer.executable_asset_keys
    assert not any(key.to_user_string().startswith("experiment") for key in weekly)


def test_precision_auto_follows_the_kernels_pytorch_runs():
    """PyTorch held to AVX2 kernels emulates bf16 even on an AVX-512 machine, so auto picks fp32."""
    import subprocess
    import sys

    probe = "from trainers.config import native_bf16_cpu; print(native_bf16_cpu())"
    held = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          env={**os.environ, "ATEN_CPU_CAPABILITY": "avx2"})  # fmt: skip
    assert held.stdout.strip() == "False"


def test_precision_auto_is_bf16_only_where_it_is_native():
    from trainers.config import chosen_precision

    avx2 = "processor : 0\nflags : fpu sse avx avx2 fma\n"
    amx = "processor : 0\nflags : fpu avx2 avx512f amx_bf16 amx_tile\n"
    assert settings.resolve("demo").training.precision == "auto"
    assert chosen_precision("auto", on_gpu=False, cpuinfo=avx2)[0] == "fp32"
    assert "no native bf16" in chosen_precision("auto", on_gpu=False, cpuinfo=avx2)[1]
    assert chosen_precision("auto", on_gpu=False, cpuinfo=amx)[0] == "bf16"
    assert chosen_precision("auto", on_gpu=True, cpuinfo=avx2)[0] == "bf16"
    assert chosen_precision("bf16", on_gpu=False, cpuinfo=avx2) == ("bf16", "as configured")
