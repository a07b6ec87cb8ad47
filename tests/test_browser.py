"""The web UI in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright):
open the list, open a specimen, hover a circuit edge and an attention token. A failing test leaves
a screenshot in $MECHSCOPE_SCREENSHOTS (default: the test's tmp dir)."""

import os
import shutil
from pathlib import Path

import pytest
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
    rows = page.locator("tr.specimen-row")
    assert rows.count() == 2
    page.get_by_role("link", name="IOI <b>circuit</b>").click()  # the name is shown as text, not markup
    page.wait_for_url(f"**/specimens/{spec.uid}")
    assert page.locator("h1.specimen-name").inner_text() == "IOI <b>circuit</b>"
    assert page.locator("article.finding").count() == len(spec.findings())

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


def test_search_and_compare_in_the_browser(browser_page, served):
    page, errors = browser_page
    base, spec = served
    page.goto(base + "/")
    page.fill("input[name=tag]", "circuit")
    page.click("form.search button")
    page.wait_for_url("**tag=circuit*")  # count() does not wait for the navigation a click starts
    assert page.locator("tr.specimen-row").count() == 1
    page.goto(base + "/")
    other = page.locator("tr.specimen-row a").nth(0).get_attribute("href").rsplit("/", 1)[1]
    page.fill("input[name=a]", spec.uid)
    page.fill("input[name=b]", other)
    page.click("text=compare >> nth=-1")
    page.wait_for_url("**/compare?*")
    page.locator(".cols h1.specimen-name").nth(1).wait_for()
    assert page.locator(".cols h1.specimen-name").count() == 2
    assert not errors, errors
