"""Two seeded kill points of `make chaos` (tests/chaos.py): the batch killed inside a step, run
again, equal to the run that was never interrupted, nothing left behind. About 15 minutes on 2
cores (an uninterrupted reference, then each point's killed and resumed runs), more than
`make test` can spend: marked `chaos`, run by `pytest -m chaos`."""

import pytest

from tests import chaos


@pytest.mark.chaos
@pytest.mark.integration
def test_a_batch_killed_inside_its_steps_resumes_to_the_same_rows(teacher_url, artifact_home, tmp_path):
    expected = chaos.fingerprint(chaos.reference(tmp_path, teacher_url))
    assert expected["kept"] and expected["shards"]
    # the unpartitioned step that batch runs share (a pool slot of one), killed with its command;
    # a step's own process killed in the middle of dedup
    for step, target in (("quality_classifier", "command"), ("deduped", "step")):
        outcome = chaos.one_point(tmp_path, teacher_url, step, target, 0.5, expected)
        assert outcome.killed, f"{step}: the step ended before the kill"
        assert outcome.divergences == [], f"{step}, {target}: {outcome.divergences}"
