"""MosService against a real SQLite file: screening, hand-computed MOS, idempotency, assignments, quorum,
concurrency, export, MLflow tags, campaigns built from a batch, and the `musicops mos` CLI."""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from musicops.evaluation.mos.errors import Conflict, Forbidden, NotFound, NotListened, QuorumTimeout
from musicops.evaluation.mos.invites import hash_token
from musicops.evaluation.mos.models import CampaignAsset
from musicops.evaluation.mos.service import MosService
from musicops.evaluation.mos.sources import campaign_assets_from_batch, campaign_assets_from_spec
from musicops.evaluation.mos.stats import krippendorff_alpha


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def asset(asset_id: str, version: str | None = None, role: str = "test",
          gold: float | None = None) -> CampaignAsset:
    return CampaignAsset(asset_id, sha(asset_id), version, role, gold, f"prompt {asset_id}")


A, B = "models:/mos-model/1", "models:/mos-model/2"
TESTS = [asset("t1", A), asset("t2", A), asset("t3", B), asset("t4", B)]
GOLD = [asset("g1", role="gold", gold=5.0), asset("g2", role="gold", gold=1.0)]


@pytest.fixture
def service(database_url: str):
    svc = MosService(database_url)
    yield svc
    svc.close()


def answer(service: MosService, rater_id: str, scores: dict[str, float], kind: str | None = None) -> None:
    """Rate this rater's items whose asset is in `scores` (optionally one kind only)."""
    for item in service.assignment(rater_id):
        if item.asset_id in scores and (kind is None or item.kind == kind):
            assert service.submit_rating(rater_id, item.item_id, scores[item.asset_id], f"s-{item.item_id}")


def answer_traps(service: MosService, rater_id: str, correct: bool = True) -> None:
    for item in service.assignment(rater_id):
        if item.kind == "trap":
            wrong = 5.0 if item.trap_expected != 5.0 else 1.0
            score = item.trap_expected if correct else wrong
            service.submit_rating(rater_id, item.item_id, score, f"s-{item.item_id}")


# ------------------------------------------------------------------ screening and statistics by hand

# rater:      r0 r1 r2 r3 r4
RATINGS = {
    "t1": [4, 5, 4, 3, 5],
    "t2": [3, 3, 4, 2, 3],
    "t3": [2, 1, 2, 3, 2],
    "t4": [5, 3, 4, 4, 3],
}
GOLD_ANSWERS = {  # gold truth g1 = 5, g2 = 1; ACR tolerance: mean |error| > 1.0 fails
    0: {"g1": 5, "g2": 1},  # error 0
    1: {"g1": 4, "g2": 2},  # error exactly 1.0: passes (the rule is strictly greater)
    2: {"g1": 5, "g2": 2},  # error 0.5
    3: {"g1": 1, "g2": 5},  # error 4.0: screened
    4: {"g1": 3, "g2": 4},  # error (2 + 3) / 2 = 2.5: screened
}


def test_two_bad_gold_raters_are_screened_and_mos_matches_hand_computation(service: MosService) -> None:
    cid = service.create_campaign("hand", TESTS + GOLD, quorum=3, n_traps=0, seed=7)
    raters = [i.rater_id for i in service.invite(cid, 5)]
    for index, rater in enumerate(raters):
        answer(service, rater, {a: RATINGS[a][index] for a in RATINGS})
        first_gold = dict(list(GOLD_ANSWERS[index].items())[:1])
        answer(service, rater, first_gold)
        # Judged only once every check item is answered: one wrong gold answer screens nobody yet.
        assert not service.rater(rater).screened_out
        answer(service, rater, dict(list(GOLD_ANSWERS[index].items())[1:]))

    screened = service.screen(cid)
    assert [r for r, _ in screened] == [raters[3], raters[4]]
    assert "gold: mean absolute error 4.00 > tolerance 1" in screened[0][1]
    assert "gold: mean absolute error 2.50 > tolerance 1" in screened[1][1]
    assert service.rater(raters[3]).screen_reason == screened[0][1]

    results = service.results(cid)
    assert (results.n_valid_raters, results.n_screened, results.n_invited) == (3, 2, 5)
    t975_2 = scipy_stats.t.ppf(0.975, 2)  # 4.3027
    # Valid raters r0, r1, r2 only. t1 = [4, 5, 4]: mean 13/3 = 4.3333, s = sqrt(1/3) = 0.5774,
    # half width = 4.3027 * 0.5774 / sqrt(3) = 1.4342.
    # t4 = [5, 3, 4]: mean 4.0, s = 1.0, half width = 4.3027 / sqrt(3) = 2.4841.
    expected = {"t1": (13 / 3, math.sqrt(1 / 3)), "t2": (10 / 3, math.sqrt(1 / 3)),
                "t3": (5 / 3, math.sqrt(1 / 3)), "t4": (4.0, 1.0)}
    for asset_id, (mean, s) in expected.items():
        score = results.asset(asset_id)
        half = t975_2 * s / math.sqrt(3)
        assert (score.mos, score.ci_low, score.ci_high) == pytest.approx((mean, mean - half, mean + half))
        assert (score.n_ratings, score.n_raters) == (3, 3)
    assert t975_2 * math.sqrt(1 / 3) / math.sqrt(3) == pytest.approx(1.4342, abs=1e-4)
    assert t975_2 / math.sqrt(3) == pytest.approx(2.4841, abs=1e-4)
    # Pooled per model version: A = t1 + t2 = [4, 5, 4, 3, 3, 4], B = t3 + t4 = [2, 1, 2, 5, 3, 4].
    t975_5 = scipy_stats.t.ppf(0.975, 5)  # 2.5706
    for version, pooled in ((A, [4, 5, 4, 3, 3, 4]), (B, [2, 1, 2, 5, 3, 4])):
        mean = sum(pooled) / 6
        s = math.sqrt(sum((v - mean) ** 2 for v in pooled) / 5)
        m = results.model(version)
        assert (m.mos, m.ci_low, m.ci_high) == pytest.approx((mean, mean - t975_5 * s / math.sqrt(6),
                                                              mean + t975_5 * s / math.sqrt(6)))
        assert (m.n_ratings, m.n_raters, m.n_assets) == (6, 3, 2)
    assert results.model(A).mos == pytest.approx(23 / 6) and results.model(B).mos == pytest.approx(17 / 6)
    # Agreement over valid raters x test clips; gold answers are not part of it.
    matrix = [[RATINGS[a][i] for a in ("t1", "t2", "t3", "t4")] for i in range(3)]
    assert results.alpha == pytest.approx(krippendorff_alpha(matrix, "interval"))
    assert results.quorum_met and service.quorum_met(cid)
    assert [a.asset_id for a in results.assets] == ["t1", "t2", "t3", "t4"]  # gold clips are not reported


def test_trap_failure_screens_and_passing_raters_stay(service: MosService) -> None:
    cid = service.create_campaign("traps", TESTS, n_traps=2, seed=1)
    good, bad = (i.rater_id for i in service.invite(cid, 2))
    traps = [item for item in service.assignment(bad) if item.kind == "trap"]
    assert len(traps) == 2
    assert all("Attention check" in t.prompt and t.trap_expected is not None for t in traps)
    assert all(f"rate this clip {t.trap_expected:g}" in t.prompt for t in traps)
    answer_traps(service, good, correct=True)
    answer_traps(service, bad, correct=False)
    assert not service.rater(good).screened_out
    reason = service.rater(bad).screen_reason
    assert service.rater(bad).screened_out and reason.startswith("trap item i_") and "instructed" in reason
    assert service.screen(cid) == [(bad, reason)]


def test_screened_ratings_are_kept_but_excluded(service: MosService, tmp_path: Path) -> None:
    cid = service.create_campaign("kept", TESTS[:1] + GOLD, quorum=1, n_traps=0)
    rater = service.invite(cid, 1)[0].rater_id
    answer(service, rater, {"t1": 5, "g1": 1, "g2": 5})
    assert service.rater(rater).screened_out
    results = service.results(cid)
    assert results.asset("t1").n_ratings == 0 and math.isnan(results.asset("t1").mos)
    assert not results.quorum_met
    import pandas as pd

    frame = pd.read_csv(service.export(cid, tmp_path / "kept.csv"))
    assert len(frame) == 3 and frame["screened_out"].all()


# ---------------------------------------------------------------------------------------- ratings


def test_submissions_are_idempotent_and_conflicts_are_reported(service: MosService, tmp_path: Path) -> None:
    cid = service.create_campaign("idem", TESTS, n_traps=0)
    first, other = (i.rater_id for i in service.invite(cid, 2))
    item = service.assignment(first)[0]
    assert service.submit_rating(first, item.item_id, 4, "sub-1") is True
    assert service.submit_rating(first, item.item_id, 4, "sub-1") is False  # the double-POST
    assert service.submit_rating(first, item.item_id, 4.0, "sub-1") is False
    with pytest.raises(Conflict, match="already rated"):
        service.submit_rating(first, item.item_id, 2, "sub-2")
    with pytest.raises(Conflict):
        service.submit_rating(first, item.item_id, 4, "sub-2")  # another submission, even with the same value
    with pytest.raises(Conflict):
        service.submit_rating(first, item.item_id, 3, "sub-1")  # same id, different content
    with pytest.raises(Forbidden):
        service.submit_rating(other, item.item_id, 4, "sub-3")  # not in the other rater's assignment
    with pytest.raises(Forbidden):
        service.submit_rating(first, "i_doesnotexist", 4, "sub-4")
    with pytest.raises(NotFound):
        service.submit_rating("r_nobody", item.item_id, 4, "sub-5")
    second = service.assignment(first)[1].item_id
    for bad in (0, 6, 2.5, math.nan, "four", None):
        with pytest.raises(ValueError):
            service.submit_rating(first, second, bad, "sub-6")
    with pytest.raises(ValueError):
        service.submit_rating(first, second, 3, "")
    frame = __import__("pandas").read_csv(service.export(cid, tmp_path / "idem.csv"))
    assert len(frame) == 1 and frame.loc[0, "submission_id"] == "sub-1" and frame.loc[0, "score"] == 4
    assert service.progress(first).done == 1


def test_a_rating_that_needs_listening_waits_for_every_byte_of_the_clip(service: MosService) -> None:
    """`require_listened` (the web app's mode): ranges sent in any order and overlapping count; a gap,
    a part, or another item's ranges do not."""
    cid = service.create_campaign("listen", TESTS, n_traps=0)
    rater, other = (i.rater_id for i in service.invite(cid, 2))
    item, second = (i.item_id for i in service.assignment(rater)[:2])
    with pytest.raises(NotListened):
        service.submit_rating(rater, item, 4, "s1", require_listened=True)  # nothing sent
    service.record_served(service.assignment(other)[0].item_id, 0, 1000, 1000)  # another rater's clip
    service.record_served(item, 600, 1000, 1000)
    service.record_served(item, 0, 300, 1000)
    assert not service.listened(item)  # bytes 300-599 never sent
    with pytest.raises(NotListened):
        service.submit_rating(rater, item, 4, "s1", require_listened=True)
    service.record_served(item, 250, 650, 1000)  # overlapping ranges close the gap
    assert service.listened(item) and not service.listened(second)
    assert service.submit_rating(rater, item, 4, "s1", require_listened=True) is True
    assert service.submit_rating(rater, item, 4, "s1", require_listened=True) is False  # the re-post
    assert service.submit_rating(rater, second, 3, "s2") is True  # programmatic callers need not listen
    for bad in ((-1, 10, 100), (0, 101, 100), (50, 40, 100)):
        with pytest.raises(ValueError):
            service.record_served(item, *bad)


def test_a_database_from_before_play_tracking_opens_with_its_ratings(tmp_path: Path) -> None:
    """`mos_plays` arrived later: an existing database gains the table and keeps every row."""
    from sqlalchemy import create_engine, inspect, text

    url = f"sqlite:///{tmp_path / 'old.db'}"
    with MosService(url) as svc:
        cid = svc.create_campaign("old", TESTS, n_traps=0)
        rater = svc.invite(cid, 1)[0].rater_id
        items = svc.assignment(rater)
        svc.submit_rating(rater, items[0].item_id, 5, "old-1")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE mos_plays"))  # the schema as it was,
        conn.execute(text("DROP TABLE alembic_version_mos"))  # made before migrations
    assert "mos_plays" not in inspect(engine).get_table_names()
    engine.dispose()
    with MosService(url) as svc:
        assert svc.progress(rater).done == 1 and svc.results(cid).n_valid_raters == 1
        svc.record_served(items[1].item_id, 0, 10, 10)
        assert svc.submit_rating(rater, items[1].item_id, 4, "new-1", require_listened=True)
        assert svc.progress(rater).done == 2


def test_tokens_are_stored_only_as_hashes(service: MosService) -> None:
    from sqlalchemy import MetaData, select

    cid = service.create_campaign("tokens", TESTS)
    invites = service.invite(cid, 3)
    assert len({i.token for i in invites}) == 3 and all(len(i.token) >= 40 for i in invites)
    rater = service.rater_for_token(invites[1].token)
    assert rater is not None and rater.rater_id == invites[1].rater_id and rater.campaign_id == cid
    assert rater.consented_at is None and not rater.screened_out
    assert service.rater_for_token("not-a-token") is None
    assert service.rater_for_token("") is None
    assert service.rater_for_token(invites[1].token + "x") is None
    tables = MetaData()
    tables.reflect(service.engine)
    with service.engine.connect() as conn:  # every row of every table, on either backend
        dump = "\n".join(str(row) for table in tables.sorted_tables for row in conn.execute(select(table)))
    assert not any(i.token in dump for i in invites)
    assert all(hash_token(i.token) in dump for i in invites)


def test_consent_is_recorded_once(service: MosService) -> None:
    cid = service.create_campaign("consent", TESTS)
    rater = service.invite(cid, 1)[0].rater_id
    service.record_consent(rater)
    first = service.rater(rater).consented_at
    assert first is not None and first.tzinfo is not None
    service.record_consent(rater)
    assert service.rater(rater).consented_at == first
    with pytest.raises(NotFound):
        service.record_consent("r_unknown")


def test_closed_campaign_refuses_ratings_and_invites(service: MosService) -> None:
    cid = service.create_campaign("closing", TESTS)
    rater = service.invite(cid, 1)[0].rater_id
    service.close_campaign(cid)
    assert service.campaign(cid).status == "closed"
    with pytest.raises(Forbidden, match="closed"):
        service.submit_rating(rater, service.assignment(rater)[0].item_id, 3, "s")
    with pytest.raises(Forbidden):
        service.invite(cid, 1)


# ---------------------------------------------------------------------------------- campaigns


def test_campaign_validation(service: MosService) -> None:
    with pytest.raises(ValueError, match="test asset"):
        service.create_campaign("x", GOLD)
    with pytest.raises(ValueError, match="gold_score"):
        service.create_campaign("x", [*TESTS, asset("g", role="gold")])
    with pytest.raises(ValueError, match="reference"):
        service.create_campaign("x", TESTS, method="mushra")
    with pytest.raises(ValueError, match="method"):
        service.create_campaign("x", TESTS, method="dcr")
    with pytest.raises(ValueError, match="duplicate"):
        service.create_campaign("x", [TESTS[0], TESTS[0]])
    with pytest.raises(ValueError, match="sha256"):
        service.create_campaign("x", [CampaignAsset("t", "../../etc/passwd")])
    with pytest.raises(ValueError, match="outside"):
        service.create_campaign("x", [*TESTS, asset("g", role="gold", gold=9.0)])
    with pytest.raises(NotFound):
        service.campaign("c_missing")
    cid = service.create_campaign("ok", TESTS, quorum=2, instructions="Use headphones.")
    campaign = service.campaign(cid)
    assert (campaign.name, campaign.method, campaign.scale, campaign.quorum, campaign.status) == (
        "ok", "acr", (1.0, 5.0), 2, "open")
    assert campaign.instructions == "Use headphones." and campaign.created_at.tzinfo is not None
    assert [c.id for c in service.list_campaigns()] == [cid]


def test_mushra_campaign(service: MosService) -> None:
    ref = CampaignAsset("ref", sha("ref"), None, "reference", None, "prompt t1")
    anchor = CampaignAsset("anc", sha("anc"), None, "anchor", None, "prompt t1")
    cid = service.create_campaign("mushra", [*TESTS, ref, anchor], method="mushra", n_traps=1, quorum=1)
    assert service.campaign(cid).scale == (0.0, 100.0)
    rater, lazy = (i.rater_id for i in service.invite(cid, 2))
    items = service.assignment(rater)
    assert {i.asset_id for i in items if i.kind == "rate"} == {"t1", "t2", "t3", "t4", "ref", "anc"}
    assert all(i.reference_sha256 == sha("ref") for i in items)  # the open reference played alongside
    trap = next(i for i in items if i.kind == "trap")
    assert trap.trap_expected in (0.0, 100.0)
    with pytest.raises(ValueError):
        service.submit_rating(rater, items[0].item_id, 101, "s")
    answer(service, rater, {"t1": 62.5, "t2": 40, "t3": 55, "t4": 70, "ref": 100, "anc": 20}, kind="rate")
    answer_traps(service, rater)
    # BS.1534-3 post-screening: a rater who scores the hidden reference below 90 is screened out.
    answer(service, lazy, {"ref": 50}, kind="rate")
    assert "hidden reference rated below 90 in 1 of 1" in service.rater(lazy).screen_reason
    results = service.results(cid)
    assert results.asset("t1").mos == 62.5 and results.asset("ref").mos == 100
    assert results.asset("anc").role == "anchor"
    assert results.quorum_met and results.n_screened == 1


# -------------------------------------------------------------------------------- assignments


def _sequence(service: MosService, rater_id: str) -> list[tuple]:
    return [(i.asset_id, i.kind, i.trap_expected, i.position) for i in service.assignment(rater_id)]


def test_assignments_are_deterministic_per_seed_and_differ_between_raters(service: MosService) -> None:
    tests = [asset(f"t{i}", A) for i in range(6)]
    make = lambda seed: service.create_campaign("det", [*tests, *GOLD], clips_per_rater=2, seed=seed)  # noqa: E731
    first, again, other = make(11), make(11), make(12)
    seq_first = [_sequence(service, i.rater_id) for i in service.invite(first, 6)]
    seq_again = [_sequence(service, i.rater_id) for i in service.invite(again, 6)]
    seq_other = [_sequence(service, i.rater_id) for i in service.invite(other, 6)]
    assert seq_first == seq_again
    assert seq_first != seq_other
    subsets = [frozenset(a for a, kind, _, _ in seq if kind == "rate") for seq in seq_first]
    assert all(len(s) == 2 for s in subsets) and len(set(subsets)) > 1
    # Windows over one shuffled order: every test clip is assigned equally often (6 raters x 2 / 6 clips).
    assert Counter(a for s in subsets for a in s) == {f"t{i}": 2 for i in range(6)}
    for seq in seq_first:  # every rater gets both gold clips and one trap
        assert Counter(kind for _, kind, _, _ in seq) == {"rate": 2, "gold": 2, "trap": 1}
    # Full assignment: same clips for everyone, in different orders.
    full = service.create_campaign("orders", tests, n_traps=0, seed=3)
    orders = [tuple(a for a, *_ in _sequence(service, i.rater_id)) for i in service.invite(full, 4)]
    assert all(sorted(o) == sorted(orders[0]) for o in orders) and len(set(orders)) > 1


def test_resume_with_next_item(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'resume.db'}"
    with MosService(url) as service:
        cid = service.create_campaign("resume", TESTS + GOLD, n_traps=1)
        rater = service.invite(cid, 1)[0].rater_id
        items = service.assignment(rater)
        assert service.next_item(rater) == items[0]
        assert service.progress(rater) == type(service.progress(rater))(0, 7, False)
        service.submit_rating(rater, items[0].item_id, 3, "a")
        service.submit_rating(rater, items[3].item_id, 3, "b")  # out of order
        assert service.next_item(rater) == items[1]
    with MosService(url) as service:  # a new process: progress survived
        assert service.next_item(rater) == items[1]
        assert (service.progress(rater).done, service.progress(rater).finished) == (2, False)
        for item in items:
            if item.position not in (0, 3):
                service.submit_rating(rater, item.item_id, item.trap_expected or 3, f"s{item.position}")
        assert service.next_item(rater) is None
        assert service.progress(rater).finished
        with pytest.raises(NotFound):
            service.next_item("r_ghost")


# ------------------------------------------------------------------------------------- quorum


def test_wait_for_quorum_times_out_with_a_clear_message_then_returns(service: MosService) -> None:
    cid = service.create_campaign("quorum", TESTS, quorum=2, n_traps=0)
    raters = [i.rater_id for i in service.invite(cid, 2)]
    answer(service, raters[0], {"t1": 4, "t2": 4, "t3": 4})
    start = time.monotonic()
    with pytest.raises(QuorumTimeout) as caught:
        service.wait_for_quorum(cid, timeout_s=0.5, poll_s=0.1)
    assert time.monotonic() - start >= 0.45  # it waited out its timeout (how long past it is the machine's business)
    assert str(caught.value) == (f"campaign {cid}: 4 of 4 assets below quorum 2 after 0.5 s "
                                 "(lowest: t4 with 0 valid ratings)")
    assert caught.value.results is not None and not caught.value.results.quorum_met

    def finish() -> None:
        time.sleep(0.2)
        answer(service, raters[0], {"t4": 3})
        answer(service, raters[1], {"t1": 5, "t2": 3, "t3": 2, "t4": 4})

    worker = threading.Thread(target=finish)
    worker.start()
    results = service.wait_for_quorum(cid, timeout_s=20, poll_s=0.05)
    worker.join()
    assert results.quorum_met and results.asset("t4").n_ratings == 2
    message = r"1 of 1 assets below quorum 3 after 0 s \(lowest: t1 with 1 valid rating\)"
    with pytest.raises(QuorumTimeout, match=message):
        one = service.create_campaign("one", TESTS[:1], quorum=3, n_traps=0)
        answer(service, service.invite(one, 1)[0].rater_id, {"t1": 2})
        service.wait_for_quorum(one, timeout_s=0, poll_s=0.1)


# -------------------------------------------------------------------------------- concurrency


def test_ten_threads_store_every_rating_exactly_once(database_url: str) -> None:
    from sqlalchemy import text

    url = database_url
    with MosService(url) as setup:
        tests = [asset(f"t{i}", A if i % 2 else B) for i in range(8)]
        cid = setup.create_campaign("busy", [*tests, *GOLD], n_traps=1)
        raters = [i.rater_id for i in setup.invite(cid, 10)]
    barrier = threading.Barrier(10)
    outcomes: list[list[bool]] = [[] for _ in raters]
    errors: list[BaseException] = []

    def rate(index: int) -> None:
        try:
            with MosService(url) as service:  # one engine per thread, like separate worker processes
                barrier.wait()
                for item in service.assignment(raters[index]):
                    score = item.trap_expected or {"g1": 5.0, "g2": 1.0}.get(item.asset_id, 3.0)
                    for _ in range(2):  # every answer posted twice
                        sid = f"s-{item.item_id}"
                        outcomes[index].append(service.submit_rating(raters[index], item.item_id, score, sid))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=rate, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    per_rater = 8 + 2 + 1
    assert all(o.count(True) == per_rater and o.count(False) == per_rater for o in outcomes)
    with MosService(url) as service:
        assert sum(service.progress(r).done for r in raters) == 10 * per_rater
        assert service.results(cid).n_valid_raters == 10
        with service.engine.connect() as conn:
            count = conn.execute(text("select count(*) from mos_ratings")).scalar()
        assert count == 10 * per_rater


def test_racing_submissions_for_one_item(service: MosService) -> None:
    cid = service.create_campaign("race", TESTS, n_traps=0)
    rater = service.invite(cid, 1)[0].rater_id
    first, second = service.assignment(rater)[:2]
    barrier = threading.Barrier(10)
    same: list[object] = []
    different: list[object] = []

    def post(item_id: str, submission: str, sink: list[object]) -> None:
        barrier.wait()
        try:
            sink.append(service.submit_rating(rater, item_id, 4, submission))
        except Conflict as exc:
            sink.append(exc)

    for item, sink, submission in ((first, same, lambda i: "one"), (second, different, lambda i: f"sub-{i}")):
        threads = [threading.Thread(target=post, args=(item.item_id, submission(i), sink)) for i in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert same.count(True) == 1 and same.count(False) == 9
    assert different.count(True) == 1 and sum(isinstance(x, Conflict) for x in different) == 9
    assert service.progress(rater).done == 2


# ---------------------------------------------------------------------------------- export, MLflow


def _rated_campaign(service: MosService) -> tuple[str, list[str]]:
    cid = service.create_campaign("export", TESTS + GOLD, n_traps=1, quorum=2)
    raters = [i.rater_id for i in service.invite(cid, 3)]
    for index, rater in enumerate(raters):
        answer(service, rater, {a: RATINGS[a][index] for a in RATINGS}, kind="rate")
        answer(service, rater, GOLD_ANSWERS[3 if index == 2 else index])
        answer_traps(service, rater)
    service.record_consent(raters[0])
    return cid, raters


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_round_trip(service: MosService, tmp_path: Path, suffix: str) -> None:
    import pandas as pd

    cid, raters = _rated_campaign(service)
    path = service.export(cid, tmp_path / "out" / f"ratings{suffix}")
    frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    assert len(frame) == 3 * 7
    assert set(frame["kind"]) == {"rate", "gold", "trap"}
    assert frame.groupby("rater_id")["screened_out"].first().to_dict() == {
        raters[0]: False, raters[1]: False, raters[2]: True}
    rated = frame[(frame["kind"] == "rate") & (frame["asset_id"] == "t4")].sort_values("rater_index")
    assert rated["score"].tolist() == [5.0, 3.0, 4.0]
    assert rated["model_version"].tolist() == [B, B, B]
    gold = frame[frame["kind"] == "gold"]
    assert set(gold["expected"]) == {5.0, 1.0}
    assert pd.to_datetime(frame["rated_at"], utc=True).notna().all()
    assert frame["consented_at"].notna().sum() == 7  # only raters[0] consented
    assert {"item_id", "position", "audio_sha256", "submission_id", "screen_reason",
            "invited_at"} <= set(frame.columns)
    with pytest.raises(ValueError):
        service.export(cid, tmp_path / "ratings.xlsx")


@pytest.mark.slow  # registers models in MLflow, ~10 s
def test_log_to_mlflow_tags_the_registered_versions(service: MosService, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from musicops.config import get_settings
    from musicops.registry import configure_mlflow

    settings = configure_mlflow(get_settings())
    client = MlflowClient()
    client.create_registered_model("mos-model")
    (tmp_path / "model").mkdir()
    for _ in range(2):
        client.create_model_version("mos-model", source=str(tmp_path / "model"))
    preset = CampaignAsset("p1", sha("p1"), "musicgen-tiny", "test", None, "")
    cid = service.create_campaign("mlflow", [*TESTS, preset], n_traps=0, quorum=1)
    for index, rater in enumerate(i.rater_id for i in service.invite(cid, 2)):
        answer(service, rater, {**{a: RATINGS[a][index] for a in RATINGS}, "p1": 3})
    tagged = service.log_to_mlflow(cid, settings)
    assert tagged == [A, B]  # the preset is no registry version: skipped
    tags = client.get_model_version("mos-model", "1").tags
    assert float(tags["mos"]) == pytest.approx((4 + 5 + 3 + 3) / 4, abs=1e-4)
    assert tags["n_ratings"] == "4" and tags["campaign"] == cid and tags["mos_method"] == "acr"
    assert float(tags["mos_ci_low"]) < float(tags["mos"]) < float(tags["mos_ci_high"])
    second = client.get_model_version("mos-model", "2").tags
    assert float(second["mos"]) == pytest.approx((2 + 1 + 5 + 3) / 4, abs=1e-4)


# ---------------------------------------------------------------------- campaigns from a batch, CLI


def _stored_batch(settings) -> list[str]:
    """Two generated-looking assets (wav in the store, provenance rows) in batch "b1"."""
    from musicops.audio.encode import encode
    from musicops.store.assets import open_asset_store
    from musicops.store.provenance import AssetRecord, ProvenanceDB

    store = open_asset_store(settings.ensure())
    rate = 32000
    t = np.arange(rate) / rate
    ids = []
    with ProvenanceDB.from_settings(settings) as db:
        for n, (freq, passed) in enumerate(((440.0, True), (660.0, True), (880.0, False))):
            clip = 0.3 * np.sin(2 * np.pi * freq * t) + 0.3 * np.sin(2 * np.pi * 8000 * t)
            clip = clip.astype(np.float32)
            wav = store.put(encode(clip, rate, "wav"), "wav")
            flac = store.put(encode(clip, rate, "flac"), "flac")
            files = {"flac": {"sha256": flac.sha256, "size": flac.size}}
            if n == 0:
                files["wav"] = {"sha256": wav.sha256, "size": wav.size}
            key = sha(f"key{n}")
            db.add_asset(AssetRecord(
                asset_id=f"a_{key[:24]}", cache_key=key, sha256=flac.sha256, files=files,
                prompt=f"tone {freq:g}", normalized_prompt=f"tone {freq:g}", seed=n, params={},
                model_name="mos-model", model_uri="models:/mos-model/1", model_version="1", batch_id="b1",
                duration_s=1.0, sample_rate=rate, generation_seconds=0.1, passed=passed))
            ids.append(f"a_{key[:24]}")
    return ids


def test_campaign_assets_from_batch_with_reference_and_lowpass_anchor(tmp_path: Path) -> None:
    import soundfile as sf

    from musicops.audio.encode import encode
    from musicops.config import get_settings
    from musicops.store.assets import open_asset_store

    settings = get_settings()
    ids = _stored_batch(settings)
    reference = tmp_path / "reference.wav"
    t = np.arange(32000) / 32000
    reference.write_bytes(encode((0.4 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32), 32000, "wav"))
    assets = campaign_assets_from_batch("b1", settings, references=[reference], anchors=1)
    roles = Counter(a.role for a in assets)
    assert roles == {"test": 2, "reference": 1, "anchor": 1}  # the failed asset is left out
    tests = [a for a in assets if a.role == "test"]
    assert [a.asset_id for a in tests] == ids[:2]
    assert {a.model_version for a in tests} == {"models:/mos-model/1"}
    store = open_asset_store(settings)
    for a in assets:  # every clip is a wav in the store (the flac-only asset was transcoded)
        assert store.verify(a.audio_sha256, "wav")
    anchor = next(a for a in assets if a.role == "anchor")
    ref = next(a for a in assets if a.role == "reference")
    assert anchor.asset_id == f"anchor_{ref.asset_id}"
    original, _ = sf.read(store.path_for(ref.audio_sha256, "wav"))
    filtered, rate = sf.read(store.path_for(anchor.audio_sha256, "wav"))
    assert rate == 32000 and filtered.shape == original.shape
    # 6 kHz is far above the 3.5 kHz cutoff: an 8th-order Butterworth, run forward and back, removes it
    # (away from the clip's abrupt start and end, which are broadband clicks).
    middle = slice(3200, -3200)
    assert np.sqrt(np.mean(filtered[middle] ** 2)) < 1e-3 * np.sqrt(np.mean(original[middle] ** 2))
    # Without references the anchor is a filtered test clip: 440 Hz passes, 8 kHz does not.
    plain = campaign_assets_from_batch("b1", settings, anchors=1)
    anchor = next(a for a in plain if a.role == "anchor")
    assert anchor.asset_id == f"anchor_{ids[0]}"
    spectrum = np.abs(np.fft.rfft(sf.read(store.path_for(anchor.audio_sha256, "wav"))[0]))
    assert spectrum[8000] < 1e-3 * spectrum[440]
    # The spec forms the kfp component accepts.
    assert [a.asset_id for a in campaign_assets_from_spec("b1", settings)] == ids[:2]
    spec = '{"batch_id": "b1", "include_failed": true}'
    assert [a.asset_id for a in campaign_assets_from_spec(spec, settings)] == ids
    listed = campaign_assets_from_spec(json.dumps([{"asset_id": "x", "audio_sha256": sha("x")}]), settings)
    assert listed == [CampaignAsset("x", sha("x"))]
    with pytest.raises(NotFound):
        campaign_assets_from_batch("nope", settings)
    with pytest.raises(ValueError):
        campaign_assets_from_spec('[{"asset": "x"}]', settings)


def test_cli_create_results_export_plot(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from musicops.cli.mos import app
    from musicops.config import get_settings

    settings = get_settings()
    _stored_batch(settings)
    runner = CliRunner()
    created = runner.invoke(app, ["create", "--batch", "b1", "--name", "cli", "--raters", "2",
                                  "--quorum", "1"],
                            env={"MUSICOPS_MOS_URL": "https://mos.example.org/"})
    assert created.exit_code == 0, created.output
    lines = created.stdout.strip().splitlines()
    cid, links = lines[0], lines[1:]
    link = re.compile(r"r_\w+\thttps://mos\.example\.org/r/[\w-]{40,}")
    assert len(links) == 2 and all(link.fullmatch(x) for x in links)
    assert "cannot reach the quorum" not in created.output
    short = runner.invoke(app, ["create", "--batch", "b1", "--name", "short", "--raters", "2", "--quorum", "3"])
    assert short.exit_code == 0 and "2 rater(s) cannot reach the quorum of 3" in short.output
    assert "--raters 1" in short.output
    token = links[0].rsplit("/", 1)[1]
    with MosService.from_settings(settings) as service:
        rater = service.rater_for_token(token)
        assert rater is not None and rater.campaign_id == cid
        for item in service.assignment(rater.rater_id):
            service.submit_rating(rater.rater_id, item.item_id, item.trap_expected or 4, item.item_id)
    shown = runner.invoke(app, ["results", cid, "--plot", str(tmp_path / "mos.png")])
    assert shown.exit_code == 0, shown.output
    assert "models:/mos-model/1" in shown.stdout and "met" in shown.stdout
    assert (tmp_path / "mos.png").stat().st_size > 1000
    assert runner.invoke(app, ["results", cid, "--json"]).exit_code == 0
    exported = runner.invoke(app, ["export", cid, str(tmp_path / "r.parquet")])
    assert exported.exit_code == 0 and (tmp_path / "r.parquet").is_file()
    more = runner.invoke(app, ["invite", cid, "--raters", "1"])
    assert more.exit_code == 0 and "/r/" in more.stdout
    missing = runner.invoke(app, ["results", "c_missing"])
    assert missing.exit_code == 2 and "no campaign" in missing.output
    bad = runner.invoke(app, ["create", "--batch", "b1", "--name", "m", "--method", "mushra"])
    assert bad.exit_code == 2 and "reference" in bad.output
