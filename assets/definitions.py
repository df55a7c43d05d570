"""The Dagster code location: `dagster dev -m assets.definitions`."""

import os

import dagster as dg

from assets import curation, exam, experiments, generation, quality, release, training
from assets.io import ArtifactIOManager
from assets.jobs import JOBS, SCHEDULES
from assets.resources import PROFILE_ENV, HubPublisher, Schoolhouse
from assets.sensors import SENSORS

# A deployment's profile (a shipped name or a YAML file, which may `extends:` one) comes from its
# environment: the UI's launches, the schedules and the sensors of this code location all use it.
schoolhouse = Schoolhouse(profile=dg.EnvVar(PROFILE_ENV)) if os.environ.get(PROFILE_ENV) else Schoolhouse()

# The hub token is read from the environment by Dagster, never written into run config.
publisher = HubPublisher(token=dg.EnvVar("HF_TOKEN")) if os.environ.get("HF_TOKEN") else HubPublisher()

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([generation, curation, quality, training, exam, release, experiments]),
    asset_checks=dg.load_asset_checks_from_modules([curation, exam]),
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources={
        "schoolhouse": schoolhouse,
        "io_manager": ArtifactIOManager(),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
        "publisher": publisher,
    },
    # each step in its own process, several at once; a run's config may pick `in_process` instead
    executor=dg.multi_or_in_process_executor,
)
