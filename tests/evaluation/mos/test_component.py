"""The `mos_campaign` kfp component under kfp.local: fails with the quorum message, succeeds once rated."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

ASSETS = [{"asset_id": f"t{n}", "audio_sha256": hashlib.sha256(f"t{n}".encode()).hexdigest(),
           "model_version": f"models:/mos-model/{n}"} for n in (1, 2)]


@pytest.fixture
def local_kfp(tmp_path: Path):
    import warnings

    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"),
               raise_on_error=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        yield


@pytest.mark.slow  # the kfp component with MLflow logging, ~10 s
def test_component_fails_with_the_quorum_message_when_nobody_rates(local_kfp, state_home: Path,
                                                                   capsys) -> None:
    from musicops.components.mos import mos_campaign

    with pytest.raises(RuntimeError, match="FAILURE"):
        mos_campaign(assets_json=json.dumps(ASSETS), name="nobody", method="acr", quorum=2, timeout_s=1.0,
                     poll_s=0.1, musicops_home=str(state_home))
    out = capsys.readouterr().out
    assert "QuorumTimeout" in out
    assert "2 of 2 assets below quorum 2 after 1 s (lowest: t1 with 0 valid ratings)" in out
    assert "http://127.0.0.1:8765/r/" in out  # the invitation links were announced


@pytest.mark.slow  # the kfp component with MLflow logging, ~10 s
def test_component_returns_the_campaign_and_logs_mos_metrics(local_kfp, state_home: Path) -> None:
    from musicops.components.mos import mos_campaign
    from musicops.evaluation.mos.service import MosService

    url = f"sqlite:///{state_home / 'mos.db'}"
    errors: list[BaseException] = []

    def raters_show_up() -> None:
        """Plays the raters: waits for the step's campaign, then answers every item."""
        try:
            with MosService(url) as service:
                deadline = time.monotonic() + 120
                while not service.list_campaigns() or not service.list_raters(service.list_campaigns()[0].id):
                    if time.monotonic() > deadline:
                        raise TimeoutError("the component never created its campaign")
                    time.sleep(0.1)
                campaign = service.list_campaigns()[0]
                for index, rater in enumerate(service.list_raters(campaign.id)):
                    for item in service.assignment(rater.rater_id):
                        score = item.trap_expected or {"t1": 4.0, "t2": 2.0}[item.asset_id] + (index % 2)
                        service.submit_rating(rater.rater_id, item.item_id, score, item.item_id)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    worker = threading.Thread(target=raters_show_up)
    worker.start()
    task = mos_campaign(assets_json=json.dumps(ASSETS), name="rated", method="acr", quorum=2, timeout_s=120.0,
                        poll_s=0.1, musicops_home=str(state_home))
    worker.join()
    assert not errors
    with MosService(url) as service:
        campaign_id = service.list_campaigns()[0].id
        assert len(service.list_raters(campaign_id)) == 2  # n_raters 0: just enough for quorum 2
    assert task.outputs["Output"] == campaign_id
    metrics = task.outputs["metrics"].metadata
    assert metrics["mos_mos-model_v1"] == pytest.approx(4.5)
    assert metrics["mos_mos-model_v2"] == pytest.approx(2.5)
    assert metrics["n_ratings_mos-model_v1"] == 2 and metrics["n_valid_raters"] == 2
    assert metrics["mos_ci_low_mos-model_v1"] < 4.5 < metrics["mos_ci_high_mos-model_v1"]
