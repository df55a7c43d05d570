"""The preflight (`schoolhouse doctor`): one check per part of the machine a run needs, each a
line saying what it found and, when it fails, the fix. Every command that launches runs calls
`preflight` for the parts it needs, so a wrong model name fails in seconds, not after a batch of
rejected rows. A check never raises: whatever goes wrong becomes a failed line naming it.

The parts: `teacher` (every URL answers, accepts the key and serves `teacher.model`), `sandbox`
(bubblewrap isolates here), `deepspeed` (it imports, the precision works and the ops a run builds can build),
`gpus` (as many as `training.num_gpus`), `disk` (room for the planned tokens), `hub` (the token
may write, when a repo is named), `cluster` (the Ray cluster answers, on the `ray` engine). The
Dagster instance's check lives with the command (this library does not import Dagster) and is
passed in as an extra part.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pipeline.paths import artifact_home
from pipeline.settings import Settings

PARTS = ("teacher", "sandbox", "deepspeed", "gpus", "disk", "hub", "cluster")
# Bytes a completion token costs on disk: 36 measured on a demo's state folder (the journal, the
# batch's table at every stage, token shards, embeddings, dedup indexes: 601 kB for 16.5k tokens).
BYTES_PER_TOKEN = 40


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    found: str
    fix: str = ""


class PreflightFailed(RuntimeError):
    """A part a run needs is not there; the message has one line per failed check."""


def format_report(checks: list[Check]) -> str:
    return "\n".join(f"{'PASS' if c.passed else 'FAIL'} {c.name}: {c.found}" + (f" -> {c.fix}" if c.fix else "")
                     for c in checks)  # fmt: skip


def diagnose(settings: Settings, parts: Iterable[str] = PARTS,
             extra: dict[str, Callable[[Settings], list[Check]]] | None = None) -> list[Check]:  # fmt: skip
    checks = []
    for part in parts:
        run = (extra or {}).get(part) or CHECKS.get(part)
        if run is None:
            raise ValueError(f"no check named {part!r} (one of {', '.join([*CHECKS, *(extra or {})])})")
        try:
            checks += run(settings)
        except Exception as error:  # a check that breaks is a failed check, named
            checks.append(Check(part, False, f"the check itself failed: {type(error).__name__}: {error}"))
    return checks


def preflight(settings: Settings, parts: Iterable[str],
              extra: dict[str, Callable[[Settings], list[Check]]] | None = None) -> None:  # fmt: skip
    failed = [c for c in diagnose(settings, parts, extra) if not c.passed]
    if failed:
        raise PreflightFailed(format_report(failed))


def teacher(settings: Settings) -> list[Check]:
    cfg = settings.teacher
    if cfg.mode == "managed":
        return [Check("teacher", True, f"managed: the run starts vLLM with {cfg.model_path or cfg.model} itself")]
    key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
    return [teacher_serves(url, cfg.model, key, cfg.api_key_env, min(cfg.connect_timeout_s, 10.0)) for url in cfg.urls]


def teacher_serves(url: str, model: str, api_key: str | None, api_key_env: str, timeout_s: float = 10.0) -> Check:
    """GET <url>/models with the key: the server answers, takes the key and lists `model`."""
    import httpx

    name = f"teacher {url}"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(f"{url.rstrip('/')}/models", headers=headers, timeout=timeout_s)
    except httpx.HTTPError as error:
        return Check(name, False, f"no answer ({type(error).__name__})",
                     "start the server, or set teacher.urls to its /v1 base URL")  # fmt: skip
    if response.status_code in (401, 403):
        fix = (f"set ${api_key_env} to the server's API key" if api_key_env
               else "the server wants an API key: set teacher.api_key_env to the variable that holds it")  # fmt: skip
        return Check(name, False, f"HTTP {response.status_code}: the API key was refused", fix)
    if response.status_code != 200:
        return Check(name, False, f"HTTP {response.status_code} for GET /models",
                     "check that teacher.urls names an OpenAI-compatible server's /v1 base URL")  # fmt: skip
    try:
        served = [m["id"] for m in response.json()["data"]]
    except (ValueError, KeyError, TypeError):  # check_reachable raises only what names a fix
        return Check(name, False, "GET /models answered, but not with a model list",
                     "check that teacher.urls names an OpenAI-compatible server's /v1 base URL")  # fmt: skip
    if model not in served:
        return Check(name, False, f"serves {', '.join(served) or 'no model'}, not {model!r}",
                     f"set teacher.model to one of: {', '.join(served)}")  # fmt: skip
    return Check(name, True, f"serves {model}" + (f", key from ${api_key_env} accepted" if api_key else ""))


def sandbox(settings: Settings) -> list[Check]:
    from pipeline.sandbox.isolation import SandboxUnavailable, check_isolation

    if settings.curation.sandbox.mode == "unconfined":
        return [Check("sandbox", True, "curation.sandbox.mode = unconfined: generated code runs with limits only, "
                                       "on purpose (warned in every run)")]  # fmt: skip
    try:
        return [Check("sandbox", True, f"bubblewrap isolates generated code here ({check_isolation()})")]
    except SandboxUnavailable as error:
        found, _, fix = str(error).partition(" Fix: ")
        return [Check("sandbox", False, found, fix or "install bubblewrap")]


def deepspeed(settings: Settings) -> list[Check]:
    import torch

    from trainers.config import chosen_precision

    cfg = settings.training
    on_gpu = cfg.num_gpus > 0
    precision, why = chosen_precision(cfg.precision, on_gpu)
    # The trainer's choice (trainers/train.py); unset, DeepSpeed guesses and logs a warning.
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    try:
        import deepspeed as ds
    except Exception as error:
        return [Check("deepspeed", False, f"does not import ({error})", "pip install deepspeed (see pyproject.toml)")]
    if on_gpu and not torch.cuda.is_available():
        return [Check("deepspeed", False, f"{ds.__version__}, but no CUDA device to build FusedAdam for",
                      "train on a GPU machine, or set training.num_gpus: 0")]  # fmt: skip
    if on_gpu and precision == "bf16" and not torch.cuda.is_bf16_supported():
        return [Check("deepspeed", False, f"{ds.__version__}: bf16 ({why}), but this GPU has no bf16",
                      "set training.precision: fp32 (or train on Ampere or newer)")]  # fmt: skip
    # The ops a run JIT-builds: FusedAdam on GPUs; on the CPU, torch's AdamW and the shared-memory
    # comm op DeepSpeed builds when it starts (a missing compiler fails the run there).
    op = "FusedAdamBuilder" if on_gpu else "ShareMemCommBuilder"
    found, fix = _op_builds(op, cuda=on_gpu)
    where = "GPU" if on_gpu else "CPU, torch's AdamW"
    return [Check("deepspeed", not fix, f"{ds.__version__} on the {where} ({precision}: {why}); {found}", fix)]


def _op_builds(builder_name: str, cuda: bool) -> tuple[str, str]:
    """(what was found, the fix or "") for one DeepSpeed op: prebuilt, or compatible with what a
    JIT build needs here (ninja, a C++ compiler, and nvcc for a CUDA op)."""
    from deepspeed.accelerator import get_accelerator
    from deepspeed.git_version_info import installed_ops
    from torch.utils.cpp_extension import CUDA_HOME, is_ninja_available

    builder = get_accelerator().create_op_builder(builder_name)
    if installed_ops.get(builder.NAME):
        return f"{builder.NAME} came prebuilt", ""
    if not builder.is_compatible(verbose=False):
        found = f"{builder.NAME} cannot build here ({builder.error_log or 'incompatible'})"[:300]
        return found, "install the toolchain DeepSpeed names, or DeepSpeed with its ops prebuilt (DS_BUILD_OPS=1)"
    compiler = os.environ.get("CXX", "c++")
    missing = [(name, fix) for name, ok, fix in (
        ("ninja", is_ninja_available(), "pip install ninja"),
        (compiler, shutil.which(compiler), "install a C++ compiler (apt install g++), or set CXX"),
        ("nvcc", not cuda or CUDA_HOME, "install the CUDA toolkit matching torch's CUDA and set CUDA_HOME"),
    ) if not ok]  # fmt: skip
    if missing:
        return (f"{builder.NAME} JIT-builds at the run's start, but this lacks {', '.join(n for n, _ in missing)}",
                "; ".join(f for _, f in missing))  # fmt: skip
    return f"{builder.NAME} JIT-builds at the run's start (ninja, {compiler}{', nvcc' if cuda else ''} here)", ""


def gpus(settings: Settings) -> list[Check]:
    import torch

    wanted = settings.training.num_gpus
    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if wanted > seen and not settings.training.hostfile:
        return [Check("gpus", False, f"training.num_gpus = {wanted}, this machine has {seen}",
                      f"set training.num_gpus to at most {seen}, or a hostfile for several machines")]  # fmt: skip
    where = f"{wanted} of {seen} GPUs" if wanted else f"the CPU ({seen} GPUs seen)"
    hosts = " per machine of the hostfile" if settings.training.hostfile else ""
    return [Check("gpus", True, f"training on {where}{hosts}")]


def disk(settings: Settings) -> list[Check]:
    home = artifact_home()
    existing = next(p for p in (home, *home.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    g = settings.generation
    tokens = g.samples_per_domain * 2 * g.max_tokens  # both domains' batches of one day, at most
    need = tokens * BYTES_PER_TOKEN
    found = f"{free / 1e9:.1f} GB free at {existing}; a day's batches need up to {_size(need)}"
    if free < need:
        return [Check("disk", False, found, f"free space, or set SCHOOLHOUSE_HOME to a larger disk ({home})")]
    return [Check("disk", True, found)]


def _size(size: float) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


def hub(settings: Settings) -> list[Check]:
    repos = [r for r in (settings.release.repo_id, settings.release.dataset_repo_id) if r]
    if not repos:
        return [Check("hub", True, "no repo named: the release is written to a local folder")]
    token = os.environ.get("HF_TOKEN")
    if not token:
        return [Check("hub", False, f"{', '.join(repos)} named but HF_TOKEN is not set",
                      "export HF_TOKEN with a token that may write, or clear release.repo_id")]  # fmt: skip
    from huggingface_hub import whoami

    try:
        me = whoami(token=token)
    except Exception as error:
        return [Check("hub", False, f"the hub did not confirm the token ({type(error).__name__}: {error})"[:300],
                      "check the network and HF_TOKEN (HF_ENDPOINT for a private hub)")]  # fmt: skip
    role = me.get("auth", {}).get("accessToken", {}).get("role", "")
    if role == "read":
        return [Check("hub", False, f"HF_TOKEN of {me.get('name')} may only read", "use a token with write access")]
    return [Check("hub", True, f"HF_TOKEN of {me.get('name')} ({role or 'role unknown'}) for {', '.join(repos)}")]


def cluster(settings: Settings) -> list[Check]:
    orchestration = settings.orchestration
    if orchestration.engine != "ray":
        return [Check("cluster", True, "orchestration.engine = local: every step's work runs on this machine")]
    from pipeline.cluster.engine import check_reachable

    try:
        check_reachable(orchestration.ray.address)
    except ConnectionError as error:
        found, _, fix = str(error).partition("; ")
        return [Check("cluster", False, found, fix)]
    return [Check("cluster", True, f"a Ray cluster answers at {orchestration.ray.address}")]


CHECKS: dict[str, Callable[[Settings], list[Check]]] = {
    "teacher": teacher, "sandbox": sandbox, "deepspeed": deepspeed, "gpus": gpus, "disk": disk, "hub": hub,
    "cluster": cluster,
}  # fmt: skip
