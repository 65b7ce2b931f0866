"""The MOS rating app over real HTTP: a uvicorn subprocess (`musicops mos serve`'s function) on a free
loopback port, real SQLite through MosService, forms scraped from the HTML like a browser would.

- 50 concurrent raters x 100 ratings (each clip fetched first) -> exactly 5,000 stored; re-posting
  all 5,000 forms stores nothing.
- Refusals store nothing: unknown token (404), another rater's item (403), missing or wrong CSRF
  (403), no `played=1` (400), `played=1` while the server has not sent the whole clip to that rater
  (400: never fetched, only part of it by Range, or fetched by another rater), score off the scale
  (400), a second different rating (409).
- Untrusted text (prompt, campaign name, instructions) is escaped; security headers are set; the
  audio URL reveals no asset id, hash or model version; tokens never reach the server log.
"""

from __future__ import annotations

import http.client
import random
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode

import httpx
import numpy as np
import pytest
from helpers.servers import ServerProcess, mos_serve
from sqlalchemy import func, select

from musicops.audio.encode import encode
from musicops.config import get_settings
from musicops.evaluation.mos.db import RatingRow
from musicops.evaluation.mos.models import CampaignAsset
from musicops.evaluation.mos.service import MosService
from musicops.store.assets import open_asset_store

N_RATERS = 50
N_CLIPS = 100
SR = 32000
XSS_PROMPT = "<script>alert(1)</script> & \"quotes\" 'single'"
XSS_NAME = "<b>Campaign</b> & <img src=x onerror=alert(2)>"
XSS_INSTRUCTIONS = "<iframe src=//evil></iframe> Listen carefully."
pytestmark = pytest.mark.slow  # a uvicorn server process per module (and a 50-rater load test)


# ---------------------------------------------------------------------------------------- helpers


class FormParser(HTMLParser):
    """Collect the named <input> values of every <form> by its action."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, dict[str, str]] = {}
        self._current: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self._current = self.forms.setdefault(a.get("action") or "", {})
        elif tag == "input" and self._current is not None and a.get("name") and a.get("type") not in ("radio", "checkbox"):
            self._current[a["name"] or ""] = a.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def form_fields(html: str, action: str) -> dict[str, str]:
    parser = FormParser()
    parser.feed(html)
    assert action in parser.forms, f"no form posting to {action} in page:\n{html[:2000]}"
    return dict(parser.forms[action])


def make_clips(settings, n: int, seconds: float, seed: int = 0) -> list[str]:
    """n distinct short WAV clips (sine + a little noise) in the asset store; returns their sha256s."""
    store = open_asset_store(settings)
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    shas = []
    for i in range(n):
        samples = 0.3 * np.sin(2 * np.pi * (220 + 7 * i) * t) + 0.01 * rng.standard_normal(t.size)
        shas.append(store.put(encode(samples.astype(np.float32), SR, "wav"), "wav").sha256)
    return shas


def count_ratings(service: MosService, campaign_id: str | None = None) -> int:
    query = select(func.count()).select_from(RatingRow)
    if campaign_id is not None:
        query = query.where(RatingRow.campaign_id == campaign_id)
    with service.engine.connect() as conn:
        return int(conn.scalar(query) or 0)


# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mos-http")


@pytest.fixture(scope="module")
def service(home: Path) -> Iterator[MosService]:
    with MosService(f"sqlite:///{home / 'mos.db'}") as svc:
        yield svc


@pytest.fixture(scope="module")
def shas(home: Path) -> list[str]:
    return make_clips(get_settings(home), N_CLIPS, seconds=0.1)


@pytest.fixture(scope="module")
def server(home: Path, service: MosService, shas: list[str]) -> Iterator[ServerProcess]:
    with mos_serve(home) as srv:
        yield srv


@pytest.fixture()
def small(service: MosService, shas: list[str]):
    """A 4-clip campaign with two consented raters (A and B) and an XSS-laden prompt, name and instructions."""
    assets = [CampaignAsset(f"secret-asset-{i}", shas[i], "models:/secret-model/7", prompt=XSS_PROMPT)
              for i in range(4)]
    cid = service.create_campaign(XSS_NAME, assets, quorum=1, n_traps=0, instructions=XSS_INSTRUCTIONS)
    a, b = service.invite(cid, 2)
    return cid, a, b, assets


def consent(client: httpx.Client, token: str) -> httpx.Response:
    page = client.get(f"/r/{token}")
    assert page.status_code == 200, page.text
    fields = form_fields(page.text, f"/r/{token}/consent")
    done = client.post(f"/r/{token}/consent", data={**fields, "agree": "1"})
    assert done.status_code == 303 and done.headers["location"] == f"/r/{token}/rate"
    page = client.get(f"/r/{token}/rate")
    assert page.status_code == 200
    return page


# ---------------------------------------------------------------------------------------- tests


class RaterConnection:
    """One rater's browser-like keep-alive connection (stdlib http.client: ~10x less client CPU than
    httpx's async client, which left the server starved on a 2-core machine)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def request(self, method: str, path: str, data: dict[str, str] | None = None) -> tuple[int, str, str]:
        body = urlencode(data) if data is not None else None
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if data is not None else {}
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.getheader("location") or "", response.read().decode()

    def fetch(self, path: str) -> bytes:
        """The clip, as the page's <audio> element would fetch it."""
        self.conn.request("GET", path)
        response = self.conn.getresponse()
        data = response.read()
        assert response.status == 200, response.status
        return data

    def close(self) -> None:
        self.conn.close()


def test_50_concurrent_raters_store_exactly_5000_ratings_and_reposts_store_nothing(
        server: ServerProcess, service: MosService, shas: list[str]) -> None:
    assets = [CampaignAsset(f"load-{i:03d}", shas[i], f"models:/m/{1 + i % 2}", prompt=f"clip {i}")
              for i in range(N_CLIPS)]
    cid = service.create_campaign("load", assets, clips_per_rater=N_CLIPS, quorum=N_RATERS, n_traps=0)
    invites = service.invite(cid, N_RATERS)

    def one_rater(token: str, seed: int) -> list[dict[str, str]]:
        """Open the invite, consent, then rate every clip from the scraped form, as a browser would."""
        rng = random.Random(seed)
        conn = RaterConnection(server.url)
        try:
            status, _, page = conn.request("GET", f"/r/{token}")
            assert status == 200
            fields = form_fields(page, f"/r/{token}/consent")
            status, location, _ = conn.request("POST", f"/r/{token}/consent", {**fields, "agree": "1"})
            assert status == 303
            status, _, page = conn.request("GET", location)
            posted = []
            for _ in range(N_CLIPS):
                assert status == 200, page[:500]
                data = {**form_fields(page, f"/r/{token}/rate"), "score": str(rng.randint(1, 5)), "played": "1"}
                assert conn.fetch(f"/r/{token}/audio/{data['item_id']}")[:4] == b"RIFF"
                status, location, page = conn.request("POST", f"/r/{token}/rate", data)
                assert status == 303, page[:500]
                posted.append(data)
                if location.endswith("/done"):
                    break
                status, _, page = conn.request("GET", location)
            return posted
        finally:
            conn.close()

    def repost(token: str, forms: list[dict[str, str]]) -> None:
        """The same 100 forms again (double-clicks, retries): each answers as before, stores nothing."""
        conn = RaterConnection(server.url)
        try:
            for data in forms:
                status, location, _ = conn.request("POST", f"/r/{token}/rate", data)
                assert (status, location) == (303, f"/r/{token}/done")
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=N_RATERS) as pool:
        start = time.perf_counter()
        futures = [pool.submit(one_rater, inv.token, i) for i, inv in enumerate(invites)]
        forms = [f.result(timeout=300) for f in futures]
        rated_s = time.perf_counter() - start
        assert count_ratings(service, cid) == N_RATERS * N_CLIPS
        start = time.perf_counter()
        futures = [pool.submit(repost, inv.token, f) for inv, f in zip(invites, forms, strict=True)]
        for future in futures:
            future.result(timeout=300)
        repost_s = time.perf_counter() - start
    print(f"\n{N_RATERS * N_CLIPS} ratings by {N_RATERS} concurrent raters: {rated_s:.1f} s; "
          f"{N_RATERS * N_CLIPS} re-posts: {repost_s:.1f} s")
    assert [len(f) for f in forms] == [N_CLIPS] * N_RATERS
    assert count_ratings(service, cid) == N_RATERS * N_CLIPS
    for inv in invites:
        progress = service.progress(inv.rater_id)
        assert (progress.done, progress.finished) == (N_CLIPS, True)
    results = service.results(cid)
    assert sum(a.n_ratings for a in results.assets) == N_RATERS * N_CLIPS
    assert results.quorum_met and results.n_valid_raters == N_RATERS
    # Each rater rated each of the 100 clips once, and every rendered form had its own submission id.
    assert all(a.n_ratings == N_RATERS and a.n_raters == N_RATERS for a in results.assets)
    assert len({f["submission_id"] for rater_forms in forms for f in rater_forms}) == N_RATERS * N_CLIPS


def test_unknown_or_missing_token_is_404_and_stores_nothing(server: ServerProcess, service: MosService, small) -> None:
    cid, a, _b, _ = small
    before = count_ratings(service)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for path in ("/r/not-a-token", "/r/not-a-token/rate", "/r/not-a-token/done", "/r/", "/r/x/audio/i_0"):
            r = client.get(path)
            assert r.status_code == 404, path
            assert "text/html" in r.headers["content-type"]
        page = consent(client, a.token)
        fields = form_fields(page.text, f"/r/{a.token}/rate")
        r = client.post("/r/not-a-token/rate", data={**fields, "score": "3", "played": "1"})
        assert r.status_code == 404
        r = client.post("/r/not-a-token/consent", data={"csrf": fields["csrf"], "agree": "1"})
        assert r.status_code == 404
    assert count_ratings(service) == before


def test_refusals_store_nothing(server: ServerProcess, service: MosService, small) -> None:
    cid, a, b, _ = small
    with httpx.Client(base_url=server.url, timeout=60) as client:
        # Consent needs the CSRF token too.
        r = client.post(f"/r/{a.token}/consent", data={"agree": "1"})
        assert r.status_code == 403
        assert service.rater(a.rater_id).consented_at is None
        page_a = consent(client, a.token)
        page_b = consent(client, b.token)
        form_a = form_fields(page_a.text, f"/r/{a.token}/rate")
        form_b = form_fields(page_b.text, f"/r/{b.token}/rate")

        def post(token: str, **data: str) -> httpx.Response:
            return client.post(f"/r/{token}/rate", data=data)

        good = {**form_a, "score": "4", "played": "1"}
        # Another rater's item with my own valid CSRF: 403.
        assert post(a.token, **{**good, "item_id": form_b["item_id"]}).status_code == 403
        # My token with B's CSRF token (bound to B): 403; and B's token with A's form: 403.
        assert post(a.token, **{**good, "csrf": form_b["csrf"]}).status_code == 403
        assert post(b.token, **good).status_code == 403
        # Missing or tampered CSRF: 403.
        assert post(a.token, **{k: v for k, v in good.items() if k != "csrf"}).status_code == 403
        tampered = good["csrf"][:-2] + ("AA" if not good["csrf"].endswith("AA") else "BB")
        assert post(a.token, **{**good, "csrf": tampered}).status_code == 403
        # Not played to the end: 400.
        assert post(a.token, **{k: v for k, v in good.items() if k != "played"}).status_code == 400
        assert post(a.token, **{**good, "played": "0"}).status_code == 400
        # Off-scale, fractional ACR, missing score: 400.
        for score in ("0", "6", "2.5", "nan", "abc", ""):
            assert post(a.token, **{**good, "score": score}).status_code == 400, score
        assert post(a.token, **{k: v for k, v in good.items() if k != "score"}).status_code == 400
        assert count_ratings(service, cid) == 0

        # played=1 is the page's word: the server has not sent this rater the clip yet, so no rating.
        refused = post(a.token, **good)
        assert refused.status_code == 400 and "not been played to the end" in refused.text
        audio_a = f"/r/{a.token}/audio/{good['item_id']}"
        whole = client.get(f"/r/{b.token}/audio/{form_b['item_id']}").content  # B's clip, fetched by B
        assert post(a.token, **good).status_code == 400  # ... does not count for A
        first_half = client.get(audio_a, headers={"Range": "bytes=0-999"})
        assert first_half.status_code == 206 and first_half.headers["content-range"].startswith("bytes 0-999/")
        size = int(first_half.headers["content-range"].rsplit("/", 1)[1])
        assert post(a.token, **good).status_code == 400  # part of the clip is not the clip
        tail = client.get(audio_a, headers={"Range": "bytes=2000-"})  # a gap: bytes 1000-1999 never sent
        assert tail.status_code == 206 and len(tail.content) == size - 2000
        assert post(a.token, **good).status_code == 400
        assert count_ratings(service, cid) == 0
        unsatisfiable = client.get(audio_a, headers={"Range": f"bytes={size}-"})
        assert unsatisfiable.status_code == 416 and unsatisfiable.headers["content-range"] == f"bytes */{size}"
        middle = client.get(audio_a, headers={"Range": "bytes=1000-1999"})
        assert middle.status_code == 206 and len(middle.content) == 1000
        sha = {i.item_id: i.audio_sha256 for i in service.assignment(a.rater_id)}[good["item_id"]]
        stored = open_asset_store(get_settings(server.home)).read(sha, "wav")
        assert first_half.content + middle.content + tail.content == stored and len(whole) > 2000
        # The three ranges now cover the file: the rating below is accepted.

        # The good one is stored once; the same form again is a no-op with the same redirect.
        first = post(a.token, **good)
        assert first.status_code == 303 and first.headers["location"] == f"/r/{a.token}/rate"
        again = post(a.token, **good)
        assert again.status_code == 303 and again.headers["location"] == first.headers["location"]
        assert count_ratings(service, cid) == 1
        # A different rating for the same item (new submission id): 409, the first one stays.
        assert post(a.token, **{**good, "score": "1", "submission_id": "other"}).status_code == 409
        assert count_ratings(service, cid) == 1
        # Audio: only my items, and only after consent.
        assert client.get(f"/r/{a.token}/audio/{form_b['item_id']}").status_code == 404
    c = service.invite(cid, 1)[0]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.get(f"/r/{c.token}/audio/{form_a['item_id']}").status_code == 403
        assert client.get(f"/r/{c.token}/rate", follow_redirects=False).headers["location"] == f"/r/{c.token}"
    assert count_ratings(service, cid) == 1


def test_pages_escape_untrusted_text_and_stay_blind(server: ServerProcess, service: MosService, small) -> None:
    cid, a, _b, assets = small
    with httpx.Client(base_url=server.url, timeout=60) as client:
        landing = client.get(f"/r/{a.token}")
        page = consent(client, a.token)
        results = client.get(f"/campaigns/{cid}/results")
    for html in (landing.text, page.text, results.text):
        assert "<b>Campaign</b>" not in html and "<img src=x" not in html
        assert "&lt;b&gt;Campaign&lt;/b&gt; &amp; &lt;img src=x onerror=alert(2)&gt;" in html
    assert "<iframe" not in landing.text and "&lt;iframe src=//evil&gt;&lt;/iframe&gt;" in landing.text
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;quotes&#34; &#39;single&#39;" in page.text
    # Blind: the rater page names no asset id, audio hash or model version.
    for asset in assets:
        assert asset.asset_id not in page.text and asset.audio_sha256 not in page.text
    assert "secret-model" not in page.text and "models:/" not in page.text
    item_id = form_fields(page.text, f"/r/{a.token}/rate")["item_id"]
    assert f'src="/r/{a.token}/audio/{item_id}"' in page.text


def test_audio_security_headers_and_health(server: ServerProcess, service: MosService, small) -> None:
    cid, a, _b, assets = small
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        page = consent(client, a.token)
        item_id = form_fields(page.text, f"/r/{a.token}/rate")["item_id"]
        audio = client.get(f"/r/{a.token}/audio/{item_id}")
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    assert audio.content[:4] == b"RIFF" and audio.content[8:12] == b"WAVE"
    assert audio.content in {open_asset_store(get_settings(server.home)).read(x.audio_sha256, "wav") for x in assets}
    assert "content-disposition" not in audio.headers  # no file name (it would be the hash)
    headers = page.headers
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    csp = headers["content-security-policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp)[1]
    assert "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert f'<script nonce="{nonce}">' in page.text
    assert audio.headers["cache-control"] == "no-store" and audio.headers["x-content-type-options"] == "nosniff"
    # The form is disabled until the clip has ended; the script flips it and sets played=1.
    assert '<fieldset id="rating" disabled>' in page.text and 'addEventListener("ended"' in page.text
    for value, label in ((1, "Bad"), (2, "Poor"), (3, "Fair"), (4, "Good"), (5, "Excellent")):
        assert f'value="{value}" required> <span>{value} &ndash; {label}</span>' in page.text
    assert re.search(r"Clip 1 of 4", page.text)


def test_results_page_from_loopback(server: ServerProcess, service: MosService, small) -> None:
    cid, a, b, _ = small
    for rater in (a, b):
        for i, item in enumerate(service.assignment(rater.rater_id)):
            service.submit_rating(rater.rater_id, item.item_id, 3 + (i % 2), f"s{i}")
    with httpx.Client(base_url=server.url, timeout=60) as client:
        r = client.get(f"/campaigns/{cid}/results")
        assert client.get("/campaigns/c_nope/results").status_code == 404
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert "models:/secret-model/7" in r.text and "3.50" in r.text
    assert 'src="data:image/png;base64,' in r.text
    # Counts only: no rater ids, no tokens.
    assert a.rater_id not in r.text and a.token not in r.text


def log_containing(server: ServerProcess, marker: str, timeout: float = 60.0) -> str:
    """The server's log once `marker` is in it (a busy machine flushes late), or as it is at the deadline."""
    deadline = time.monotonic() + timeout
    while marker not in (log := server.log()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return log


def test_results_need_admin_token_when_configured(tmp_path: Path, service: MosService, shas: list[str]) -> None:
    home = tmp_path / "admin-home"
    home.mkdir()
    svc = MosService(f"sqlite:///{home / 'mos.db'}")
    sha = make_clips(get_settings(home), 1, seconds=0.1)[0]
    cid = svc.create_campaign("admin", [CampaignAsset("x", sha, "models:/m/1")], quorum=1, n_traps=0)
    svc.close()
    with mos_serve(home, {"MUSICOPS_MOS_ADMIN_TOKEN": "s3cret-admin-token"}) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as client:
        assert client.get(f"/campaigns/{cid}/results").status_code == 403
        assert client.get(f"/campaigns/{cid}/results", params={"admin": "wrong"}).status_code == 403
        assert client.get(f"/campaigns/{cid}/results", params={"admin": "s3cret-admin-token"}).status_code == 200
        assert client.get(f"/campaigns/{cid}/results", headers={"X-Admin-Token": "s3cret-admin-token"}).status_code == 200
        assert client.get(f"/campaigns/{cid}/results",
                          headers={"Authorization": "Bearer s3cret-admin-token"}).status_code == 200
        log = log_containing(srv, "admin=<redacted>")
    assert "s3cret-admin-token" not in log and "admin=<redacted>" in log


def test_tokens_never_reach_the_server_log(server: ServerProcess, service: MosService, small) -> None:
    cid, a, _b, _ = small
    with httpx.Client(base_url=server.url, timeout=60) as client:
        consent(client, a.token)
    log = log_containing(server, "/r/<token>/rate")  # the access log flushes when it flushes
    assert "/r/<token>/rate" in log  # the access log is on, with the token scrubbed
    assert a.token not in log
    for inv in service.list_raters(cid):
        assert inv.rater_id  # raters exist; none of their tokens is recoverable from the log
    secret = server.home / "mos-secret"
    assert secret.stat().st_mode & 0o777 == 0o600


def test_mushra_page_has_a_0_100_input_and_the_open_reference(server: ServerProcess, service: MosService,
                                                                shas: list[str]) -> None:
    assets = [CampaignAsset("m-test", shas[10], "models:/m/1", prompt="jazz"),
              CampaignAsset("m-ref", shas[11], role="reference", prompt="jazz")]
    cid = service.create_campaign("mushra", assets, method="mushra", quorum=1, n_traps=0)
    inv = service.invite(cid, 1)[0]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        page = consent(client, inv.token)
        fields = form_fields(page.text, f"/r/{inv.token}/rate")
        assert 'type="number" id="score" name="score" min="0" max="100"' in page.text
        assert f'src="/r/{inv.token}/audio/{fields["item_id"]}/reference"' in page.text
        item = {i.item_id: i for i in service.assignment(inv.rater_id)}[fields["item_id"]]
        ref = client.get(f"/r/{inv.token}/audio/{fields['item_id']}/reference")
        assert ref.status_code == 200 and ref.content == open_asset_store(get_settings(server.home)).read(
            item.reference_sha256, "wav")
        post = {**fields, "played": "1"}
        assert client.post(f"/r/{inv.token}/rate", data={**post, "score": "73"}).status_code == 400  # not sent
        assert client.get(f"/r/{inv.token}/audio/{fields['item_id']}").status_code == 200
        assert client.post(f"/r/{inv.token}/rate", data={**post, "score": "101"}).status_code == 400
        assert count_ratings(service, cid) == 0
        assert client.post(f"/r/{inv.token}/rate", data={**post, "score": "73"}).status_code == 303
        # An oversized body is refused before it is read.
        big = client.post(f"/r/{inv.token}/rate", data={**post, "score": "73", "pad": "x" * 20_000})
        assert big.status_code == 413
    assert count_ratings(service, cid) == 1
