"""The web UI in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright):
open the list, open a specimen, hover a circuit edge and an attention token. A failing test leaves
a screenshot in $MECHSCOPE_SCREENSHOTS (default: the test's tmp dir)."""

import os
import shutil
from pathlib import Path

import pytest
import torch
from samples import sample_results

from mechscope.web.server import running_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Chromium (apt-get install chromium)")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture
def browser_page(tmp_path, request):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        yield page, errors
        if getattr(request.node, "failed", False):
            shots = Path(os.environ.get("MECHSCOPE_SCREENSHOTS", tmp_path))
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / f"{request.node.name}.png"), full_page=True)
        browser.close()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if outcome.get_result().when == "call":
        item.failed = outcome.get_result().failed


@pytest.fixture
def served(llama, tmp_path):
    import mechscope.archive

    archive = mechscope.archive.open(tmp_path / "archive")
    spec = archive.create("IOI <b>circuit</b>", model=llama, task="ioi", tags=["circuit"])
    for r in sample_results(llama):
        spec.add(r)
    archive.create("an empty specimen", task="none")
    with running_server(archive) as base:
        yield base, spec


def test_browse_hover_an_edge_and_a_token(browser_page, served):
    sync_api = pytest.importorskip("playwright.sync_api")
    page, errors = browser_page
    base, spec = served
    page.goto(base + "/")
    assert page.locator("section.spec-card").count() == 2
    page.get_by_role("link", name="IOI <b>circuit</b>").click()  # the name is shown as text, not markup
    page.wait_for_url(f"**/specimens/{spec.uid}")
    assert page.locator("h1.specimen-name").inner_text() == "IOI <b>circuit</b>"
    assert page.locator("article.finding").count() == len(spec.findings())
    figures = page.locator("article.finding img")  # served by reference from /files/HASH, and loaded
    assert figures.count() > 0 and all(figures.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
                                       for i in range(figures.count()))

    edge = page.locator("svg.circuit path.edge[data-label^='a1.h3 → logits']")
    edge.scroll_into_view_if_needed()
    mid = edge.evaluate("""e => { const p = e.getPointAtLength(e.getTotalLength() / 2);
        const m = e.getScreenCTM(); return [p.x * m.a + p.y * m.c + m.e, p.x * m.b + p.y * m.d + m.f]; }""")
    page.mouse.move(*mid)  # the middle of the curve itself, as a person would point at it
    info = page.locator("div.graph", has=edge).locator(".graph-info")
    sync_api.expect(info).to_have_text("a1.h3 → logits: +1.2")  # waits for the hover handler

    attention = page.locator("section.attention")
    attention.locator("button.head[data-head='2']").click()
    attention.locator("span.tok").last.hover()
    sync_api.expect(attention.locator(".attn-info")).to_contain_text("attends most to")
    text = attention.locator(".attn-info").inner_text()
    assert text.startswith("head 2: ") and "attends most to" in text
    weights = attention.locator("span.tok").evaluate_all("els => els.map(e => e.style.background)")
    assert sum("rgba" in w for w in weights) == len(weights)  # every token shaded by its weight
    assert not errors, errors


def test_filter_tick_two_and_compare_in_the_browser(browser_page, served):
    page, errors = browser_page
    base, spec = served
    page.goto(base + "/")
    page.select_option("select[name=tag]", "circuit")
    page.click("form.search button")
    page.wait_for_url("**tag=circuit*")  # count() does not wait for the navigation a click starts
    assert page.locator("section.spec-card").count() == 1
    page.goto(base + "/")
    card = page.locator("section.spec-card", has=page.get_by_role("link", name="IOI <b>circuit</b>"))
    assert card.locator("img.headline").evaluate("img => img.complete && img.naturalWidth > 0")  # the stored figure
    button = page.locator("button.compare-picked")
    boxes = page.locator("input[name=pick]")
    assert button.is_disabled()
    boxes.nth(0).check()
    assert button.is_disabled()  # one is not a comparison
    boxes.nth(1).check()
    assert button.is_enabled()
    button.click()
    page.wait_for_url("**/compare?*")
    page.locator(".cols h1.specimen-name").nth(1).wait_for()
    assert page.locator(".cols h1.specimen-name").count() == 2
    assert not errors, errors


def test_the_feature_browser_in_the_browser(browser_page, llama, tmp_path):
    import mechscope.archive
    from samples import _sae_samples

    cards = _sae_samples(llama)[2]
    archive = mechscope.archive.open(tmp_path / "archive")
    spec = archive.create("features", model=llama, task="features")
    spec.add(cards)
    page, errors = browser_page
    with running_server(archive) as base:
        page.goto(base + f"/specimens/{spec.uid}")
        page.get_by_role("link", name="browse these cards").click()
        page.wait_for_url("**/features")
        assert page.locator("tr.feature-row").count() == 2
        page.select_option("select[name=sort]", "density")
        page.click("form.search button")
        page.wait_for_url("**sort=density*")
        units = page.locator("tr.feature-row").evaluate_all("rows => rows.map(r => Number(r.dataset.unit))")
        assert units == [cards.neurons[i] for i in sorted(range(2), key=lambda i: -cards.density[i])]
        page.select_option("select[name=sort]", "score")  # the cards carry explanations: best scored first
        page.click("form.search button")
        page.wait_for_url("**sort=score*")
        units = page.locator("tr.feature-row").evaluate_all("rows => rows.map(r => Number(r.dataset.unit))")
        assert units == [cards.neurons[i] for i in sorted(range(2), key=lambda i: -cards.score(i))]
        shown = page.locator("tr.feature-row td.explanation").all_inner_texts()
        assert shown == [cards.explained(cards.neurons.index(u))["explanation"] for u in units]
        page.fill("input[name=q]", cards.explained(0)["explanation"])  # search by explanation
        page.click("form.search button")
        page.wait_for_url("**q=*")
        assert cards.neurons[0] in page.locator("tr.feature-row").evaluate_all(
            "rows => rows.map(r => Number(r.dataset.unit))")
        page.select_option("select[name=sort]", "density")
        page.fill("input[name=q]", cards.promoted[1][0][0].strip() or cards.name(1))
        page.click("form.search button")
        page.wait_for_url("**q=*")
        page.locator(f"tr.feature-row[data-unit='{cards.neurons[1]}'] a").click()
        page.wait_for_url(f"**/features/{cards.neurons[1]}")
        assert page.locator("div.card").count() == 1
        assert page.locator("div.card p.explanation").inner_text().startswith(
            "“" + cards.explained(1)["explanation"] + "”")
        shades = page.locator("div.card .ctx span").evaluate_all("els => els.map(e => e.style.background)")
        assert shades and all(shades), "the static viewer shades every token by its activation"
    assert not errors, errors


# -- nothing injected runs ---------------------------------------------------------------------
MARK = "window.__pwned = (window.__pwned || 0) + 1"
PAYLOADS = [f"<script>{MARK}</script>", f"\"><img src=x onerror=\"{MARK}\">", f"'><svg onload='{MARK}'>",
            f"</script><script>{MARK}</script>", f"<iframe srcdoc=\"<script>parent.{MARK}</script>\"></iframe>"]


def poison(value, counter=[0]):  # noqa: B006 - a running count, so each string gets the next payload
    """Every string of a result's data (not its type, tensor names or keys) with a payload appended."""
    if isinstance(value, str):
        counter[0] += 1
        return value + PAYLOADS[counter[0] % len(PAYLOADS)]
    if isinstance(value, list):
        return [poison(v) for v in value]
    if isinstance(value, dict):
        if "__tensor__" in value:
            return value
        return {k: (v if k in ("type", "format") else poison(v)) for k, v in value.items()}
    return value


def hostile_specimen(archive, llama, tmp_path):
    """A specimen whose every text field holds a script payload: its name, description, tags,
    task, dataset, model (name, fingerprint, config keys and values), notes, and every string of
    every finding's result; plus, through an import, a figure.svg that carries a script."""
    from types import SimpleNamespace

    from mechscope.results import Result

    p = PAYLOADS
    model = SimpleNamespace(name="m" + p[0], fingerprint="f" + p[1], cfg={"family": p[2], p[3]: p[4]})
    spec = archive.create("evil" + p[0], model=model, task="t" + p[1], dataset="d" + p[2], dataset_hash="h" + p[3],
                          description="desc" + p[4], tags=[p[0], p[1]], seed=1)
    kept = 0
    for r in sample_results(llama):
        data, tensors = r.to_dict()
        try:
            bad = Result.from_dict(poison(data), tensors)
            bad.html(draw=False)
        except Exception:  # a field the result parses (a site name): refused on the way in, not shown
            continue
        spec.add(bad, notes="note" + p[1], figure=hasattr(bad, "svg"))
        kept += 1
    assert kept >= 30, kept
    spec.tag(p[2])
    return spec


def svg_import(archive, llama, tmp_path):
    """Import an export whose circuit figure.svg was replaced by one that runs a script."""
    import hashlib
    import json
    import zipfile

    from mechscope.circuits import Circuit
    from mechscope.results import Provenance

    spec = archive.create("svg carrier", model=llama)
    spec.add(Circuit(provenance=Provenance.of(llama), nodes=["embed", "logits"], edges=[["embed", "logits", 1.0]]))
    src = archive.export(spec.uid, tmp_path / "svg.mscope")
    archive.remove(spec.uid)
    evil = (f"<svg xmlns='http://www.w3.org/2000/svg' onload='{MARK}'><script>{MARK}</script>"
            f"<foreignObject><iframe srcdoc='<script>parent.{MARK}</script>'/></foreignObject></svg>").encode()
    digest = hashlib.sha256(evil).hexdigest()
    with zipfile.ZipFile(src) as zin:
        m = json.loads(zin.read("manifest.json"))
        entries = {i.filename: zin.read(i.filename) for i in zin.infolist()}
    f = m["findings"][0]
    old = f["files"]["figure.svg"]["hash"]
    f["files"]["figure.svg"] = {"hash": digest, "size": len(evil)}
    m["blobs"] = {**{k: v for k, v in m["blobs"].items() if k != old}, digest: len(evil)}
    entries = {k: v for k, v in entries.items() if k != f"blobs/{old}"} | {f"blobs/{digest}": evil,
                                                                          "manifest.json": json.dumps(m).encode()}
    dst = tmp_path / "evil-svg.mscope"
    with zipfile.ZipFile(dst, "w") as zout:
        for name, data in entries.items():
            zout.writestr(name, data)
    return archive.import_file(dst), digest


def test_script_payloads_in_every_field_never_run(browser_page, llama, tmp_path):
    import mechscope.archive
    from mechscope.report import write_report

    page, errors = browser_page
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    archive = mechscope.archive.open(tmp_path / "archive")
    spec = hostile_specimen(archive, llama, tmp_path)
    carrier, svg_digest = svg_import(archive, llama, tmp_path)
    report, _ = write_report(spec, tmp_path / "report.html")

    from mechscope.report.render import static_text

    own = {static_text("mechscope.js"), static_text("cytoscape.min.js")}  # the only scripts a report inlines

    def injected() -> dict:
        return page.evaluate("""() => ({pwned: window.__pwned || 0,
            inline: Array.from(document.querySelectorAll('script:not([src]):not([type="application/json"])'),
                               s => s.textContent),
            handlers: document.querySelectorAll('[onerror],[onload],[onclick],[onmouseover],[srcdoc]').length,
            frames: document.querySelectorAll('iframe').length})""")

    with running_server(archive) as base:
        urls = [base + "/", base + "/?q=" + PAYLOADS[0], base + f"/specimens/{spec.uid}",
                base + f"/specimens/{spec.uid}?version=2", base + f"/compare?a={spec.uid}&b={carrier.uid}",
                base + f"/specimens/{carrier.uid}", report.as_uri()]
        for url in urls:
            page.goto(url)
            page.wait_for_load_state("load")
            seen = injected()
            inline = seen.pop("inline")
            assert seen == {"pwned": 0, "handlers": 0, "frames": 0}, (url, seen)
            assert (len(inline) >= 1 if url.startswith("file:") else not inline) and set(inline) <= own, url
        assert page.locator("article.finding").count() >= 30  # the report: every hostile finding shown
        page.goto(f"{base}/files/{svg_digest}")  # the stored SVG opened by itself: sandboxed, its script inert
        page.wait_for_timeout(300)
        assert page.evaluate("window.__pwned || 0") == 0
    assert not dialogs, dialogs
    assert not errors, errors


def _agraph_checks(page, sync_api, explained: str | None = None):
    """Drive the attribution-graph viewer: slider, a real hover on a node (showing its explanation, where
    ``explained`` gives the text every feature has), pinning, an edge click."""
    section = page.locator("section.agraph").first
    section.scroll_into_view_if_needed()
    page.wait_for_function("() => document.querySelector('section.agraph')._cy !== undefined")
    n_nodes = section.evaluate("s => s._cy.nodes().length")
    n_edges = section.evaluate("s => s._cy.edges().length")
    assert n_nodes > 3 and n_edges > 0
    count = section.locator(".agraph-count")
    sync_api.expect(count).to_have_text(f"{n_edges} of {n_edges} edges")
    section.locator("input.agraph-threshold").evaluate("el => { el.value = 1; el.dispatchEvent(new Event('input')); }")
    shown = section.evaluate("s => s._cy.edges().filter(e => e.style('display') === 'element').length")
    assert 1 <= shown < n_edges or n_edges == 1
    sync_api.expect(count).to_have_text(f"{shown} of {n_edges} edges")
    section.locator("input.agraph-threshold").evaluate("el => { el.value = 100; el.dispatchEvent(new Event('input')); }")
    # hover a feature node where it is drawn, as a person would
    xy = section.evaluate("""s => { const n = s._cy.nodes('.feature')[0]; const p = n.renderedPosition();
        const r = s.querySelector('.cy').getBoundingClientRect(); return [r.left + p.x, r.top + p.y, n.id()]; }""")
    page.mouse.move(xy[0], xy[1])
    info = section.locator(".agraph-info")
    sync_api.expect(info).to_contain_text(xy[2].split("_")[0])
    assert "influence" in info.inner_text()
    if explained is not None:
        assert f"“{explained}”  detection 0.75" in info.inner_text()  # as text: the markup is not parsed
    page.mouse.click(xy[0], xy[1])  # pin: its neighbourhood lit, the rest faded
    sync_api.expect(info).to_contain_text("inputs")
    faded = section.evaluate("s => s._cy.elements('.faded').length")
    lit = section.evaluate("s => s._cy.elements('.lit').length")
    assert faded > 0 and lit > 0
    section.evaluate("s => s._cy.edges()[0].emit('tap')")
    sync_api.expect(info).to_contain_text("→")


def test_attribution_graph_viewer_standalone_and_served(browser_page, llama, tmp_path):
    import mechscope.archive
    from test_attribution_graph import _planted_chain

    from mechscope.tracing import attribution_graph
    from mechscope.tracing.view import graph_cards, group_features
    from mechscope.report.page import page as html_page

    sync_api = pytest.importorskip("playwright.sync_api")
    model, coders, tok_a, tok_b = _planted_chain()
    prompt = [model.tokenizer.bos_token_id] + model.tokenize("a bc")[0][0].tolist()[:4] + [tok_a]
    graph = attribution_graph(model, coders, prompt, max_logits=3, progress=False)
    blocks = torch.tensor([prompt[1:] * 2] * 3)
    cards = graph_cards(graph, model, coders, blocks=blocks, k=2, progress=False)
    assert set(cards) == {"0_3", "1_7"} and cards["0_3"]["top"]
    assert group_features(graph, model, coders, similarity=0.99) == []  # u and B's unembedding are orthogonal
    graph.extra["supernodes"] = [["the chain", "0_3_5", "1_7_5"]]
    said = "the <b>letter</b> after 'a'"
    graph.extra["explanations"] = {k: {"explanation": said, "explainer": "rule", "scores": {"detection": 0.75}}
                                   for k in ("0_3", "1_7")}
    page, errors = browser_page
    console, missing = [], []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" and "404" not in m.text else None)
    page.on("response", lambda r: missing.append(r.url) if r.status >= 400 and "/favicon" not in r.url else None)
    standalone = tmp_path / "graph.html"
    standalone.write_text(html_page(graph.title, graph.html()), encoding="utf-8")
    page.goto(standalone.as_uri())
    _agraph_checks(page, sync_api, explained=said)
    assert page.locator("section.agraph").evaluate("s => s._cy.$id('sn:the chain').children().length") == 2
    assert page.locator("section.agraph b").count() == 0
    archive = mechscope.archive.open(tmp_path / "archive")
    spec = archive.create("graph", model=model, task="attribution graph")
    spec.add(graph)
    with running_server(archive) as base:
        page.goto(base + f"/specimens/{spec.uid}")
        _agraph_checks(page, sync_api, explained=said)
    assert not errors and not console and not missing, (errors, console, missing)  # incl. CSP violations


def test_circuit_diagram_threshold_slider(browser_page, served):
    page, errors = browser_page
    base, spec = served
    page.goto(base + f"/specimens/{spec.uid}")
    graph = page.locator("div.graph").first
    total = graph.locator(".edge-group").count()
    graph.locator("input.graph-threshold").evaluate("el => { el.value = 40; el.dispatchEvent(new Event('input')); }")
    visible = graph.locator(".edge-group").evaluate_all("gs => gs.filter(g => g.style.display !== 'none').length")
    assert 1 <= visible < total
    assert graph.locator(".graph-count").inner_text() == f"{visible} of {total} edges"
    assert not errors, errors


def test_a_long_attention_pattern_is_drawn_from_its_strongest_keys(browser_page, tmp_path):
    """Beyond PAGE_WEIGHTS the page holds each query's strongest keys: hovering still shades the tokens and
    names the most-attended one (the same as the full pattern's)."""
    import mechscope.archive
    from mechscope.components.heads import AttentionPatterns
    from mechscope.results import Provenance

    sync_api = pytest.importorskip("playwright.sync_api")
    page, errors = browser_page
    n = 400
    pattern = torch.rand(9, n, n, generator=torch.Generator().manual_seed(1)).softmax(-1)  # weights ~1/n
    tokens = [f" w{i}" for i in range(n)]
    result = AttentionPatterns(provenance=Provenance(model="m", fingerprint="f" * 32), prompt="".join(tokens),
                               tokens=tokens, layer=0, pattern=pattern)
    archive = mechscope.archive.open(tmp_path / "archive")
    spec = archive.create("long prompt", task="none")
    spec.add(result)
    with running_server(archive) as base:
        page.goto(f"{base}/specimens/{spec.uid}")
        attention = page.locator("section.attention")
        assert "strongest keys of 400" in attention.locator(".attn-info").inner_text()
        attention.locator("button.head[data-head='3']").click()
        attention.locator("span.tok").nth(350).hover()
        best = int(pattern[3, 350].argmax())
        sync_api.expect(attention.locator(".attn-info")).to_contain_text(f'attends most to " w{best}"')
        weights = attention.locator("span.tok").evaluate_all("els => els.map(e => e.style.background)")
        assert sum("rgba" in w for w in weights) == n
    assert not errors, errors


def test_a_result_in_a_notebook_output_cell(browser_page, tmp_path):
    """A result's notebook output (``_repr_mimebundle_``'s text/html) put in a page as a notebook front end
    does: where scripts run, the attribution-graph viewer works inside its frame (offline: every script
    inlined) and the cell fits the frame's height; where they do not (a sanitised, untrusted output), the
    no-script fragment shows — summary and static figure."""
    from test_attribution_graph import _planted_chain

    from mechscope.report.notebook import FRAME_HEIGHT
    from mechscope.tracing import attribution_graph

    sync_api = pytest.importorskip("playwright.sync_api")
    model, coders, tok_a, tok_b = _planted_chain()
    prompt = [model.tokenizer.bos_token_id] + model.tokenize("a bc")[0][0].tolist()[:4] + [tok_a]
    graph = attribution_graph(model, coders, prompt, max_logits=3, progress=False)
    bundle = graph._repr_mimebundle_()
    assert bundle["text/plain"] == graph.summary()
    from mechscope.components.heads import AttentionPatterns
    from mechscope.results import Provenance

    tokens = [" the", " cat", " sat", " down"]
    attention = AttentionPatterns(provenance=Provenance(model="m", fingerprint="f" * 32), prompt="".join(tokens),
                                  tokens=tokens, layer=0,
                                  pattern=torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0)).softmax(-1))
    cell = tmp_path / "cell.html"
    cell.write_text(f"<!doctype html><html><body><div class='jp-OutputArea'>{bundle['text/html']}</div>"
                    f"<div class='jp-OutputArea'>{attention._repr_mimebundle_()['text/html']}</div></body></html>",
                    encoding="utf-8")
    page, errors = browser_page
    requests = []
    page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:", "about:")) else None)
    page.goto(cell.as_uri())
    frame_box = page.locator("iframe.mechscope-frame").first
    sync_api.expect(frame_box).to_be_visible()
    assert page.locator(".mechscope-fallback").evaluate_all("els => els.filter(e => e.offsetParent).length") == 0
    second = page.frame_locator("iframe.mechscope-frame >> nth=1")  # the attention viewer, in its own frame
    second.locator("button.head[data-head='1']").click()
    second.locator("span.tok").last.hover()
    sync_api.expect(second.locator(".attn-info")).to_contain_text("attends most to")
    frame = frame_box.element_handle().content_frame()
    frame.wait_for_function("() => { const s = document.querySelector('section.agraph'); return s && s._cy; }")
    section = frame.locator("section.agraph")
    assert section.evaluate("s => s._cy.nodes().length") > 3
    page.wait_for_function(f"() => document.querySelector('iframe.mechscope-frame').style.height !== '{FRAME_HEIGHT}px'")
    section.scroll_into_view_if_needed()
    xy = section.evaluate("""s => { const n = s._cy.nodes('.feature')[0]; const p = n.renderedPosition();
        const r = s.querySelector('.cy').getBoundingClientRect(); return [r.left + p.x, r.top + p.y, n.id()]; }""")
    box = frame_box.bounding_box()
    page.mouse.move(box["x"] + xy[0], box["y"] + xy[1])
    sync_api.expect(frame.locator(".agraph-info")).to_contain_text("influence")
    assert not errors and not requests, (errors, requests)
    blind = page.context.browser.new_page(java_script_enabled=False)
    blind.goto(cell.as_uri())
    fallback = blind.locator(".mechscope-fallback").first
    sync_api.expect(fallback).to_be_visible()
    assert graph.summary().split("\n")[0] in fallback.inner_text()
    assert blind.locator("iframe.mechscope-frame").evaluate_all("els => els.filter(e => e.offsetParent).length") == 0
    blind.close()


def test_an_exported_notebook_works_offline(browser_page, tmp_path):
    """A notebook executed in the tutorials' kernel (an attribution graph and attention patterns displayed),
    exported to HTML by nbconvert with require.js and MathJax switched off, opened with every request that is
    not a file blocked: the graph viewer draws and answers a hover, the attention viewer a click and a hover."""
    import sys

    nbformat = pytest.importorskip("nbformat")
    nbconvert = pytest.importorskip("nbconvert")
    sync_api = pytest.importorskip("playwright.sync_api")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "tutorials"))
    import execute

    if not execute.kernel_installed():
        pytest.skip("no kernel 'mechscope' (make test installs it)")
    tests = Path(__file__).resolve().parent
    book = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": execute.KERNEL, "display_name": "mechscope"}})
    book.cells = [nbformat.v4.new_code_cell(source) for source in (
        f"import sys\nsys.path.insert(0, {str(tests)!r})\nfrom test_attribution_graph import _planted_chain\n"
        "from mechscope.tracing import attribution_graph\n"
        "model, coders, tok_a, tok_b = _planted_chain()\n"
        "prompt = [model.tokenizer.bos_token_id] + model.tokenize('a bc')[0][0].tolist()[:4] + [tok_a]\n"
        "attribution_graph(model, coders, prompt, max_logits=3, progress=False)",
        "from mechscope.components.heads import AttentionPatterns\n"
        "AttentionPatterns.of(model.run('the cat sat down', cache='blocks.0.attn.pattern'), layer=0)")]
    path = tmp_path / "exported.ipynb"
    nbformat.write(book, path)
    executed, _ = execute.execute(path)
    body, _ = nbconvert.HTMLExporter(template_name="lab", mathjax_url="", require_js_url="").from_notebook_node(executed)
    page_file = tmp_path / "exported.html"
    page_file.write_text(body, encoding="utf-8")
    page, errors = browser_page
    blocked = []

    def offline(route):
        if route.request.url.startswith(("file:", "data:", "about:", "blob:")):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", offline)
    page.goto(page_file.as_uri())
    frames = page.locator("iframe.mechscope-frame")
    sync_api.expect(frames.first).to_be_visible()
    assert frames.count() == 2
    graph = frames.first.element_handle().content_frame()
    graph.wait_for_function("() => { const s = document.querySelector('section.agraph'); return s && s._cy; }")
    section = graph.locator("section.agraph")
    assert section.evaluate("s => s._cy.nodes().length") > 3
    section.scroll_into_view_if_needed()
    xy = section.evaluate("""s => { const n = s._cy.nodes('.feature')[0]; const p = n.renderedPosition();
        const r = s.querySelector('.cy').getBoundingClientRect(); return [r.left + p.x, r.top + p.y]; }""")
    box = frames.first.bounding_box()
    page.mouse.move(box["x"] + xy[0], box["y"] + xy[1])
    sync_api.expect(graph.locator(".agraph-info")).to_contain_text("influence")
    attention = page.frame_locator("iframe.mechscope-frame >> nth=1")
    attention.locator("button.head[data-head='1']").click()
    attention.locator("span.tok").last.hover()
    sync_api.expect(attention.locator(".attn-info")).to_contain_text("attends most to")
    assert not errors, errors
    assert all("cdn" in url or "unpkg" in url for url in blocked), blocked  # only the exporter's own CDN links


def test_attribution_graph_viewer_lays_the_graph_out_readably(browser_page, tmp_path):
    """Columns are positions spread over the box's width, in order, labelled by their tokens; rows are the layers
    that hold a node, labelled; no two nodes overlap (the outputs, all at the last position, included); a
    feature is labelled by its explanation, else its card's label; the static figure gives way to the viewer."""
    from test_attribution_graph import PROMPT, random_transcoders

    from mechscope.models.tiny import tiny
    from mechscope.report.page import page as html_page
    from mechscope.tracing import attribution_graph

    sync_api = pytest.importorskip("playwright.sync_api")
    model = tiny("llama")
    graph = attribution_graph(model, random_transcoders(model), PROMPT, progress=False)
    features = [n for n in graph.node_ids()[:graph.n_features]]
    kept = set(graph.node_ids()[i] for i in graph.prune(0.8, 0.98).nodes.nonzero()[:, 0].tolist())
    explained, carded = [f for f in features if f in kept][:2]
    key = lambda node: "_".join(node.split("_")[:2])  # noqa: E731  (layer_feature of a node id L_F_P)
    graph.extra["explanations"] = {key(explained): {"explanation": "cats & <dogs>", "explainer": "rule", "scores": {}}}
    graph.extra["cards"] = {key(carded): {"label": "fires on 'mat'", "top": [], "promoted": []}}
    standalone = tmp_path / "graph.html"
    standalone.write_text(html_page(graph.title, graph.html()), encoding="utf-8")
    page, errors = browser_page
    page.goto(standalone.as_uri())
    page.wait_for_function("() => document.querySelector('section.agraph')._cy !== undefined")
    section = page.locator("section.agraph")
    boxes = section.evaluate("""s => s._cy.nodes().filter(n => !n.hasClass('axis') && !n.hasClass('super')).map(n => {
        const b = n.renderedBoundingBox({includeLabels: false}); return [n.id(), n.classes()[0], b.x1, b.y1, b.x2, b.y2]; })""")
    width = section.evaluate("s => s.querySelector('.cy').clientWidth")
    assert len(boxes) == len(kept)
    xs = [(b[2] + b[4]) / 2 for b in boxes]
    assert max(xs) - min(xs) > 0.6 * width  # spread over the box, not squeezed into a column
    overlaps = [(a[0], b[0]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
                if min(a[4], b[4]) - max(a[2], b[2]) > 0.5 and min(a[5], b[5]) - max(a[3], b[3]) > 0.5]
    assert not overlaps, overlaps[:5]
    tokens = sorted((b for b in boxes if b[1] == "token"), key=lambda b: int(b[0].rsplit("_", 1)[1]))
    assert [b[2] for b in tokens] == sorted(b[2] for b in tokens) and len(tokens) == graph.n_pos  # in prompt order
    assert sum(b[1] == "target" for b in boxes) == len(graph.targets)
    rows = section.evaluate("s => s._cy.nodes('.axis').map(n => n.data('label'))")
    assert rows[0] == "tokens" and rows[-1] == "output" and "L0" in rows
    labels = section.evaluate(f"s => [s._cy.$id('{explained}').data('label'), s._cy.$id('{carded}').data('label')]")
    assert labels == ["cats & <dogs>", "fires on 'mat'"]
    assert section.locator("img.agraph-figure").is_hidden() and section.locator(".agraph-legend li").count() == 6
    section.locator("button.agraph-fit").click()
    # an edge that crosses positions says that no attention explanation is stored for it; one within a position not
    crossing = section.evaluate("""s => { const pos = id => JSON.parse(s.querySelector('script.agraph-data').textContent)
        .nodes.find(n => n.id === id).pos; const e = s._cy.edges().filter(e => pos(e.data('source')) !== pos(e.data('target')))[0];
        e.emit('tap'); return e.id(); }""")
    assert crossing and "(no attention explanation stored for this edge)" in section.locator(".agraph-info").inner_text()
    section.evaluate("""s => { const pos = id => JSON.parse(s.querySelector('script.agraph-data').textContent)
        .nodes.find(n => n.id === id).pos; s._cy.edges().filter(e => pos(e.data('source')) === pos(e.data('target')))[0].emit('tap'); }""")
    assert "no attention explanation" not in section.locator(".agraph-info").inner_text()
    assert not errors, errors
