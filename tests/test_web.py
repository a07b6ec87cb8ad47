"""The web app: pages, JSON API, OpenAPI, safety (escaping, read-only, no paths outside the
archive), and a bounded load test on loopback with writes while serving."""

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from samples import sample_results

from mechscope.report import specimen_report, write_report
from mechscope.web import create_app
from mechscope.web.server import running_server

EVIL = "<script>alert('x')</script>"
LOCAL = "http://127.0.0.1"  # the Host a browser on this machine sends; others are refused
SEEDED = 9  # NextTokens … SiteAttribution (samples.py), the Circuit among them


def archive_model(spec):
    from mechscope.models.tiny import tiny

    assert spec.model_name == "tiny-llama"
    return tiny("llama")


@pytest.fixture
def seeded(llama, archive):
    """Two specimens; the first holds the first nine sample kinds (every kind's figure is stored
    and drawn in test_results: storing all ~40 here cost ~8 s per test)."""
    spec = archive.create(f"IOI {EVIL}", model=llama, task="ioi", tags=["circuit", EVIL], description=f"desc {EVIL}")
    results = sample_results(llama)[:SEEDED]
    for r in results:
        spec.add(r, notes=f"note {EVIL}")
    other = archive.create("induction heads", task="induction", tags=["heads"])
    other.add(results[0])
    return archive, spec, other


def test_report_is_self_contained_and_escaped(seeded, tmp_path):
    archive, spec, _ = seeded
    path, seconds = write_report(spec, tmp_path / "r.html")
    text = path.read_text()
    for kind in ("NextTokens", "AblationScan", "AttentionPatterns", "Circuit", "SteeredGeneration", "LogitLens",
                 "LogitAttribution", "Attribution", "SiteAttribution"):
        assert f'data-kind="{kind}"' in text
    assert EVIL not in text and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in text
    assert "src='http" not in text and 'src="http' not in text  # nothing fetched from elsewhere
    assert "<svg" in text and 'class="tok"' in text and "data:image/png;base64," in text
    assert text == specimen_report(spec)


def test_pages_and_api(seeded):
    archive, spec, other = seeded
    client = TestClient(create_app(archive), base_url=LOCAL)
    index = client.get("/")
    assert index.status_code == 200 and "induction heads" in index.text and EVIL not in index.text
    assert "induction heads" not in client.get("/", params={"tag": "circuit"}).text
    assert "induction heads" in client.get("/", params={"q": "INDUCTION"}).text
    page = client.get(f"/specimens/{spec.uid}")
    assert page.status_code == 200 and "Circuit" in page.text and EVIL not in page.text
    # figures by reference: the served page loads each stored figure from /files/HASH (a 256 MiB "PNG" was
    # inlined into every page); the standalone report still inlines them
    import re

    sources = re.findall(r'<img[^>]*\bsrc="([^"]+)"', page.text)
    figures = {f"/files/{f.files['figure.png'][0]}" for f in spec.findings() if "figure.png" in f.files}
    assert "data:image/png" not in page.text and sources and set(sources) <= figures
    assert client.get(f"/specimens/{spec.uid}", params={"version": 2}).text.count('class="finding"') == 1
    assert client.get(f"/specimens/{spec.uid}", params={"version": 99}).status_code == 404
    cmp = client.get("/compare", params={"a": spec.uid, "b": other.uid})
    assert cmp.status_code == 200 and "induction heads" in cmp.text and "Circuit" in cmp.text

    listing = client.get("/api/specimens", params={"task": "ioi"}).json()
    assert [s["uid"] for s in listing] == [spec.uid]
    detail = client.get(f"/api/specimens/{spec.uid}").json()
    assert [f["kind"] for f in detail["findings"]] == [type(r).__name__ for r in sample_results(archive_model(spec))[:SEEDED]]
    circuit = next(f for f in detail["findings"] if f["kind"] == "Circuit")
    assert circuit["evidence"]["faithfulness"] == 0.91
    data = client.get(f"/api/specimens/{spec.uid}/findings/{circuit['uid']}").json()["data"]
    assert data["type"] == "Circuit" and data["edges"][0] == ["embed", "a0.h1", 0.8]
    png = detail["findings"][0]["files"]["figure.png"]["url"]
    got = client.get(png)
    assert got.status_code == 200 and got.headers["content-type"] == "image/png" and got.content[:4] == b"\x89PNG"
    svg = client.get(circuit["files"]["figure.svg"]["url"])
    assert svg.headers["content-type"].startswith("image/svg+xml")
    spec_api = client.get("/openapi.json").json()
    assert "/api/specimens" in spec_api["paths"] and "/api/specimens/{uid}/findings/{fid}" in spec_api["paths"]
    assert client.get("/api/specimens/nope").status_code == 404


@pytest.mark.parametrize("path", ["/files/../archive.db", "/files/..%2F..%2Fetc%2Fpasswd", "/files/" + "0" * 64,
                                  "/files/archive.db", "/files/%2e%2e/archive.db"])
def test_no_path_outside_the_archive_is_served(seeded, path):
    client = TestClient(create_app(seeded[0]), base_url=LOCAL)
    response = client.get(path)
    assert response.status_code == 404 and b"CREATE TABLE" not in response.content and b"SQLite" not in response.content


def test_read_only_unless_writable(seeded):
    archive, spec, _ = seeded
    ro = TestClient(create_app(archive), base_url=LOCAL)
    assert ro.post(f"/api/specimens/{spec.uid}/tags", json={"tag": "new"}).status_code == 403
    assert ro.delete(f"/api/specimens/{spec.uid}").status_code == 403
    rw = TestClient(create_app(archive, writable=True), base_url=LOCAL)
    assert "new" in rw.post(f"/api/specimens/{spec.uid}/tags", json={"tag": "new"}).json()["tags"]
    fid = spec.findings()[0].uid
    assert rw.post(f"/api/specimens/{spec.uid}/findings/{fid}/notes", json={"notes": "edited"}).json()["notes"] == "edited"
    assert rw.delete(f"/api/specimens/{spec.uid}").json() == {"deleted": spec.uid}
    assert rw.get(f"/api/specimens/{spec.uid}").status_code == 404


def test_concurrent_readers_and_a_writer_on_loopback(seeded, llama):
    archive, spec, other = seeded
    result = sample_results(llama)[0]
    written = []
    with running_server(archive) as base:
        urls = ["/", f"/specimens/{spec.uid}", f"/api/specimens/{spec.uid}", "/api/specimens", f"/specimens/{other.uid}"]
        latencies, errors = [], []

        def reader(i):
            with httpx.Client(base_url=base, timeout=30) as client:
                for j in range(6):
                    t = time.perf_counter()
                    r = client.get(urls[(i + j) % len(urls)])
                    latencies.append(time.perf_counter() - t)
                    if r.status_code != 200:
                        errors.append((r.status_code, r.text[:200]))

        def writer():
            for i in range(8):
                written.append(other.add(result, notes=f"served write {i}", figure=False).uid)

        with ThreadPoolExecutor(max_workers=9) as pool:
            futures = [pool.submit(reader, i) for i in range(8)] + [pool.submit(writer)]
            for f in futures:
                f.result(timeout=120)
        assert not errors, errors[:3]
        assert len(latencies) == 48 and statistics.median(latencies) < 10
        with httpx.Client(base_url=base) as client:
            served = {f["uid"] for f in client.get(f"/api/specimens/{other.uid}").json()["findings"]}
    assert set(written) <= served and len(written) == 8  # writes while serving lose nothing
    assert threading.active_count() < 50


@pytest.mark.parametrize("writable", [False, True])
def test_foreign_hosts_and_cross_site_writes_are_refused(seeded, writable):
    """DNS rebinding (a page on evil.example resolved to 127.0.0.1 sends Host: evil.example) is
    refused by every server; a writable one also refuses changes whose Origin is another site."""
    archive, spec, _ = seeded
    app = create_app(archive, writable=writable)
    local = TestClient(app, base_url=LOCAL)
    for host in ("evil.example", "evil.example:8765", "127.0.0.1.evil.example"):
        foreign = TestClient(app, base_url=f"http://{host}")
        assert foreign.get("/").status_code == 400
        assert foreign.delete(f"/api/specimens/{spec.uid}").status_code == 400
    assert TestClient(app, base_url="http://localhost:8765").get("/").status_code == 200
    page = local.get(f"/specimens/{spec.uid}")
    assert page.status_code == 200 and page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self';" in policy and "unsafe" not in policy
    digest = spec.findings()[0].files["figure.png"][0]
    assert "sandbox" in local.get(f"/files/{digest}").headers["content-security-policy"]
    cross = local.post(f"/api/specimens/{spec.uid}/tags", json={"tag": "x"}, headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    same = local.post(f"/api/specimens/{spec.uid}/tags", json={"tag": "x"}, headers={"Origin": "http://127.0.0.1:8765"})
    assert same.status_code == (200 if writable else 403)
    assert ("x" in archive.get(spec.uid).tags) == writable
    assert TestClient(create_app(archive, hosts=["lab-box"]), base_url="http://lab-box:8765").get("/").status_code == 200


def test_the_index_is_a_library_with_filters_and_compare_by_ticking(seeded):
    archive, spec, other = seeded
    client = TestClient(create_app(archive), base_url=LOCAL)
    index = client.get("/")
    assert index.text.count('class="spec-card"') == 2 and EVIL not in index.text
    head = next(f for f in spec.findings() if "figure.png" in f.files)  # the first finding with a figure
    assert f'src="/files/{head.files["figure.png"][0]}"' in index.text  # its headline figure, stored, not drawn
    assert str(escape(head.summary.splitlines()[0].strip())) in index.text  # its one-line summary
    for kind in ("Circuit", "NextTokens"):  # the result-type filter offers what the archive holds
        assert f'<option value="{kind}"' in index.text
    by_kind = client.get("/", params={"kind": "Circuit"}).text
    assert by_kind.count('class="spec-card"') == 1 and "induction heads" not in by_kind
    assert archive.facets()["tasks"] == ["induction", "ioi"]
    picked = client.get(f"/compare?pick={spec.uid}&pick={other.uid}")
    assert picked.status_code == 200 and picked.text.count("specimen-name") == 2
    one = client.get("/compare", params={"pick": spec.uid})
    assert one.status_code == 400 and "tick two (ticked 1)" in one.text


def test_the_feature_browser_searches_sorts_and_shows_one_card(llama, archive):
    from samples import _sae_samples

    cards = _sae_samples(llama)[2]
    spec = archive.create("features", model=llama, task="features")
    finding = spec.add(cards)
    client = TestClient(create_app(archive), base_url=LOCAL)
    assert f"/specimens/{spec.uid}/findings/{finding.uid}/features" in client.get(f"/specimens/{spec.uid}").text
    base = f"/specimens/{spec.uid}/findings/{finding.uid}/features"
    page = client.get(base)
    assert page.status_code == 200 and page.text.count('class="feature-row"') == 2
    dense = client.get(base, params={"sort": "density"}).text
    order = [int(x.split('"')[0]) for x in dense.split('class="feature-row" data-unit="')[1:]]
    assert order == [cards.neurons[i] for i in sorted(range(2), key=lambda i: -cards.density[i])]
    token = cards.promoted[1][0][0]
    found = client.get(base, params={"q": token}).text
    assert f'data-unit="{cards.neurons[1]}"' in found
    assert client.get(base, params={"q": "no such token anywhere"}).text.count('class="feature-row"') == 0
    card = client.get(f"{base}/{cards.neurons[1]}")
    assert card.status_code == 200 and card.text.count('class="card"') == 1
    assert f'data-unit="{cards.neurons[1]}"' in card.text and str(escape(cards.label(1))) in card.text
    assert client.get(f"{base}/999").status_code == 404 and client.get(base, params={"sort": "x"}).status_code == 400
    other = spec.add(sample_results(llama)[0])
    assert client.get(f"/specimens/{spec.uid}/findings/{other.uid}/features").status_code == 404


def test_the_feature_browser_shows_searches_and_sorts_explanations(llama, archive):
    """Explanations on the cards (from the dictionary's sidecar) and from an Explanations finding of the same
    site in the specimen: shown per row and on the card, found by search, sorted by score (unscored last)."""
    import dataclasses

    from samples import _sae_samples

    samples = _sae_samples(llama)
    cards, explained = samples[2], samples[-1]
    assert cards.explanations, "the sample cards carry their explanations"
    spec = archive.create("features", model=llama, task="features")
    bare = spec.add(dataclasses.replace(cards, explanations={}))
    client = TestClient(create_app(archive), base_url=LOCAL)
    base = f"/specimens/{spec.uid}/findings/{bare.uid}/features"
    assert 'class="explanation"></td>' in client.get(base).text  # nothing to show yet
    spec.add(explained)  # the specimen now holds explanations of these features
    page = client.get(base).text
    for i in range(len(cards.neurons)):
        text = cards.explained(i)["explanation"]
        assert str(escape(text)) in page
    by_score = client.get(base, params={"sort": "score"}).text
    order = [int(x.split('"')[0]) for x in by_score.split('class="feature-row" data-unit="')[1:]]
    assert order == [cards.neurons[i] for i in sorted(range(2), key=lambda i: -cards.score(i))]
    word = cards.explained(1)["explanation"].strip("'")
    found = client.get(base, params={"q": cards.explained(1)["explanation"]}).text
    assert f'data-unit="{cards.neurons[1]}"' in found and found.count('class="feature-row"') >= 1, word
    card = client.get(f"{base}/{cards.neurons[1]}").text
    assert 'class="explanation"' in card and str(escape(cards.explained(1)["explanation"])) in card
    carried = spec.add(cards)  # cards that carry their own explanations show them without the finding
    assert str(escape(cards.explained(0)["explanation"])) in client.get(
        f"/specimens/{spec.uid}/findings/{carried.uid}/features").text


def test_non_finite_numbers_come_out_of_the_api_as_standard_json(llama, archive):
    """A circuit whose faithfulness could not be computed (NaN) was stored and its page rendered, but the
    JSON API answered 500 for it and its specimen: JSON has no NaN. Now written explicitly."""
    import json

    from mechscope import jsontext
    from mechscope.circuits import Circuit
    from mechscope.results import Provenance

    circuit = Circuit(provenance=Provenance.of(llama), nodes=["embed", "logits"], edges=[["embed", "logits", 1.0]],
                      faithfulness=float("nan"), completeness=float("inf"), extra={"curve": [[1, float("-inf")]]})
    spec = archive.record("not computable", [(circuit, "")])
    client = TestClient(create_app(archive), base_url=LOCAL)
    whole = client.get(f"/api/specimens/{spec.uid}")
    assert whole.status_code == 200
    json.loads(whole.text, parse_constant=lambda name: pytest.fail(f"a bare {name} token"))  # standard JSON
    fid = whole.json()["findings"][0]["uid"]
    one = jsontext.loads(client.get(f"/api/specimens/{spec.uid}/findings/{fid}").text)
    assert one["evidence"]["completeness"] == float("inf") and one["data"]["extra"]["curve"] == [[1, float("-inf")]]
    assert client.get(f"/specimens/{spec.uid}").status_code == 200
    back = Circuit.from_json(circuit.to_json())
    assert back.completeness == float("inf") and back.faithfulness != back.faithfulness  # NaN
    json.loads(circuit.to_json(), parse_constant=lambda name: pytest.fail(f"a bare {name} token"))
