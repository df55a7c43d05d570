"""The Dagster code location: `dagster dev -m pipeline.definitions`."""

import dagster as dg

from assets import curation, exam, generation, release, training
from pipeline.io import ArtifactIOManager
from pipeline.jobs import JOBS, SCHEDULES
from pipeline.resources import Schoolhouse

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([generation, curation, training, exam, release]),
    asset_checks=dg.load_asset_checks_from_modules([curation, exam]),
    jobs=JOBS,
    schedules=SCHEDULES,
    resources={
        "schoolhouse": Schoolhouse(),
        "io_manager": ArtifactIOManager(),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    },
    executor=dg.in_process_executor,
)
