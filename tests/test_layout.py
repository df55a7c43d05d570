"""The three layers hold: imports go one way, the trainer runs from a copy of trainers/ alone,
profiles and exam tasks are data files that fail clearly when wrong."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import settings
from pipeline.exam.tasks import read_task, tasks

ROOT = Path(__file__).resolve().parents[1]


def imported_packages(folder: str) -> dict[str, set[str]]:
    """Top-level names each module under `folder` imports (at any depth of the module)."""
    found = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_imports_go_one_way():
    for module, names in imported_packages("pipeline").items():
        assert not names & {"assets", "dagster"}, f"{module} imports the Dagster side: {names & {'assets', 'dagster'}}"
    for module, names in imported_packages("trainers").items():
        assert not names & {"assets", "pipeline", "dagster"}, f"{module} reaches outside trainers/"
    assert any("pipeline" in names for names in imported_packages("assets").values())


# Run inside a fresh interpreter: pipeline, assets and dagster cannot be imported at all.
STANDALONE = """
import importlib.abc, runpy, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pipeline", "assets", "dagster"):
            raise ImportError(f"{name} is not on this machine")
sys.meta_path.insert(0, Refuse())
sys.path.insert(0, sys.argv.pop(1))
import trainers
assert trainers.__file__.startswith(sys.path[0]), trainers.__file__
sys.argv[0] = "trainers.train"
runpy.run_module("trainers.train", run_name="__main__")
"""


@pytest.mark.integration
def test_a_copy_of_trainers_alone_trains_from_a_config_file(tmp_path):
    from tests.test_trainer import write_packed_text

    box = tmp_path / "gpu-box"
    shutil.copytree(ROOT / "trainers", box / "trainers", ignore=shutil.ignore_patterns("__pycache__"))
    data = write_packed_text(tmp_path / "data", documents=200)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(data), "out_dir": str(tmp_path / "out"), "seq_len": 32,
                                      "micro_batch_size": 2, "max_steps": 3, "log_every": 1,
                                      "mixture": {"text": 1.0}}))  # fmt: skip
    run = subprocess.run([sys.executable, "-I", "-c", STANDALONE, str(box), "--config", str(config)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "step 3/3" in run.stdout
    assert (tmp_path / "out" / "model" / "config.json").is_file()


def test_shipped_profiles_are_files_and_a_user_file_works(tmp_path):
    assert settings.PROFILES == ("demo", "experiments", "phi-1.5", "phi-2")
    assert settings.resolve("phi-2", complete=False).training.zero_stage == 2
    assert (settings.resolve("phi-2", complete=False).training.lr
            == settings.resolve("phi-1.5", complete=False).training.lr)  # extends phi-1.5
    mine = tmp_path / "mine.yaml"
    mine.write_text("extends: demo\ngeneration: {samples_per_domain: 3}\ntraining: {max_steps: 7}\n")
    resolved = settings.resolve(str(mine), {"training": {"lr": 0.01}})
    assert (resolved.generation.samples_per_domain, resolved.training.max_steps, resolved.training.lr) == (3, 7, 0.01)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("trainin: {max_steps: 7}\n", r"mine.yaml: unknown stage trainin"),
        ("training: {max_stepz: 7}\n", r"mine.yaml\): training.max_stepz = 7: Extra inputs are not permitted"),
        ("training: [1, 2]\n", r"mine.yaml: training must be a mapping"),
        ("extends: mine.yaml\n", r"loops back"),
    ],
)
def test_a_bad_profile_file_names_the_file_and_the_field(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text(text)
    with pytest.raises(settings.ConfigError, match=message):
        settings.resolve(str(tmp_path / "mine.yaml") if "extends" not in text else "mine.yaml")


def test_exam_tasks_are_declarations():
    assert set(tasks()) == {"mmlu", "mmlu_continuation", "mmlu_lighteval_cloze", "mmlu_cloze", "mmlu_mc",
                            "humaneval", "arc_easy", "arc_challenge", "hellaswag", "piqa",
                            "winogrande", "openbookqa", "boolq"}  # fmt: skip
    cloze = tasks()["mmlu_cloze"]
    assert cloze.render(question="Why?", choices=["a", "b", "c", "d"], letters="ABCD") == "Question: Why?\nAnswer:"
    mc = tasks()["mmlu_mc"]
    assert mc.render(question="Why?", choices=["a", "b", "c", "d"], letters="ABCD") == (
        "Why?\nA. a\nB. b\nC. c\nD. d\nAnswer:"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("task: t\ndataset: mmlu\noutput_type: multiple_choice\nmetric: acc\nprompt: x\n", r"missing field 'choice'"),
        ("task: t\ndataset: mmlu\noutput_type: ranking\nmetric: acc\n", r"output_type = 'ranking'"),
        ("task: t\ndataset: mmlu\noutput_type: multiple_choice\nmetric: f1\nprompt: x\nchoice: y\n", r"metric = 'f1'"),
        ("task: t\ndataset: mmlu\noutput_type: multiple_choice\nmetric: acc\nprompt: '{{ x'\nchoice: y\n",
         r"prompt: unexpected end of template"),
        ("task: t\nshots: 5\n", r"unknown field shots"),
        ("task: t\ndataset: datasets\ndataset_path: d\noutput_type: multiple_choice\nmetric: acc\nprompt: x\n"
         "target: t\n",
         r"give `choices` \(scored after the prompt\) or `contexts`"),
        ("task: t\ndataset: datasets\noutput_type: multiple_choice\nmetric: acc\nprompt: x\nchoices: a\n",
         r"missing field 'dataset_path'"),
    ],
)
def test_a_bad_task_file_names_the_file_and_the_field(tmp_path, text, message):
    path = tmp_path / "task.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        read_task(path)
    assert "task.yaml" in str(error.value)
