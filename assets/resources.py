"""Dagster resources: the run's settings (profile + overrides) and where artifacts live."""

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import dagster as dg
from pydantic import BaseModel, Field, PrivateAttr, create_model

from pipeline import settings as s
from pipeline.paths import artifact_home, artifact_path

if TYPE_CHECKING:
    from pipeline.cluster.engine import LocalEngine, RayEngine
    from pipeline.release.publish import Published


def _launchpad_type(annotation: Any) -> Any:
    """Dagster config types for the override fields: enums become strings so that a wrong value
    reaches our validation, whose message lists the allowed values."""
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return str
    if getattr(annotation, "__origin__", None) is list:
        (inner,) = annotation.__args__
        return list[_launchpad_type(inner)]
    return annotation


def _overrides_of(model: type[BaseModel], stage: str) -> type[dg.Config]:
    """A Launchpad config class with the same fields as `model`, each optional (None = profile);
    a component's settings (`curation.gopher`) become a section of their own."""
    fields: dict[str, Any] = {}
    for name, f in model.model_fields.items():
        if name in s.SET_PER_RUN.get(stage, ()):
            continue
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            section = _overrides_of(f.annotation, f"{stage}.{name}")
            fields[name] = (section, Field(default_factory=section, description=f.annotation.__doc__))
        else:
            fields[name] = (Optional[_launchpad_type(f.annotation)], Field(None, description=f.description))
    return create_model(model.__name__.replace("Settings", "Overrides"), __base__=dg.Config, **fields)


# Steps in the `gpu` pool carry these tags: on Dagster's Kubernetes executor (docs/scaling.md, "Scaling out")
# each such step gets a pod that asks for a GPU, so it lands on a GPU node; elsewhere they are inert.
GPU_STEP_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}}


TeacherOverrides = _overrides_of(s.TeacherSettings, "teacher")
GenerationOverrides = _overrides_of(s.GenerationSettings, "generation")
CurationOverrides = _overrides_of(s.CurationSettings, "curation")
TrainingOverrides = _overrides_of(s.TrainingSettings, "training")
ExamOverrides = _overrides_of(s.ExamSettings, "exam")
ReleaseOverrides = _overrides_of(s.ReleaseSettings, "release")
ExperimentOverrides = _overrides_of(s.ExperimentSettings, "experiments")
OrchestrationOverrides = _overrides_of(s.OrchestrationSettings, "orchestration")


PROFILE_ENV = "SCHOOLHOUSE_PROFILE"  # the deployment's profile (assets/definitions.py)


class Schoolhouse(dg.ConfigurableResource):
    """The profile for this run, with any single value overridden."""

    profile: str = Field(
        "demo", description=f"One of: {', '.join(s.PROFILES)}, or the path of your own profile YAML file."
    )
    teacher: TeacherOverrides = Field(default_factory=TeacherOverrides)  # type: ignore[valid-type]
    generation: GenerationOverrides = Field(default_factory=GenerationOverrides)  # type: ignore[valid-type]
    curation: CurationOverrides = Field(default_factory=CurationOverrides)  # type: ignore[valid-type]
    training: TrainingOverrides = Field(default_factory=TrainingOverrides)  # type: ignore[valid-type]
    exam: ExamOverrides = Field(default_factory=ExamOverrides)  # type: ignore[valid-type]
    release: ReleaseOverrides = Field(default_factory=ReleaseOverrides)  # type: ignore[valid-type]
    experiments: ExperimentOverrides = Field(default_factory=ExperimentOverrides)  # type: ignore[valid-type]
    orchestration: OrchestrationOverrides = Field(default_factory=OrchestrationOverrides)  # type: ignore[valid-type]

    _settings: s.Settings | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Runs before the first step: a bad profile or value fails the run before any work.
        self._settings = self.resolve()
        # In each step's own process (the multiprocess executor's): stop, as Dagster stops a step,
        # if the run's process dies, rather than run on orphaned.
        from assets.launch import stop_with_parent

        stop_with_parent()
        if context.log is not None:
            context.log.info(f"profile {self.profile}")

    def resolve(self) -> s.Settings:
        overrides = {stage: getattr(self, stage).model_dump() for stage in s.STAGES}
        return s.resolve(self.profile, overrides)

    @property
    def settings(self) -> s.Settings:
        if self._settings is None:
            self._settings = self.resolve()
        return self._settings

    def engine(self) -> "LocalEngine | RayEngine":
        """Where this step's per-row work runs (`orchestration.engine`): here, or on the Ray
        cluster at `orchestration.ray.address`, joined once per step process."""
        from pipeline.cluster.engine import engine_for

        return engine_for(self.settings.orchestration)

    def path(self, *parts: str) -> Path:
        return artifact_path(*parts)

    def folder(self, *parts: str) -> Path:
        """A folder under the artifact home, made if absent."""
        folder = artifact_home().joinpath(*parts)
        folder.mkdir(parents=True, exist_ok=True)
        return folder


class HubPublisher(dg.ConfigurableResource):
    """Publishes release folders: to the Hugging Face hub when a repo id and a token are set,
    else to `<home>/release/`. Give the token as `EnvVar("HF_TOKEN")`: it then never appears in
    run config, logs, metadata or cards."""

    token: Optional[str] = Field(None, description="Hub token (from the HF_TOKEN environment variable).")
    endpoint: Optional[str] = Field(None, description="Hub endpoint ('' = huggingface.co).")

    def publish(self, folder: Path, repo_id: str, repo_type: str) -> "Published":
        from pipeline.release.publish import publish

        target = artifact_path("release", folder.name)
        return publish(folder, repo_id, repo_type, self.token, target, endpoint=self.endpoint or None)
