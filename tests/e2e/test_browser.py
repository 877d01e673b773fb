"""A real browser (Debian's /usr/bin/chromium via Playwright) drives `streamlit run app.py` with no network.

Every request to a host other than 127.0.0.1/localhost is aborted, so the bertviz views must draw
with the inlined d3/jquery. Screenshots go to test-artifacts/ (gitignored).
Needs: `.ci/app-deps.sh` (apt-get install chromium; pip playwright, no `playwright install`).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import urlopen

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing: run .ci/app-deps.sh")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium, or .ci/app-deps.sh)")
    runs = tmp_path_factory.mktemp("e2e-runs")
    port = _free_port()
    env = {**os.environ, "DISTILL_RUNS_DIR": str(runs), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    env.pop("DISTILL_DATA_DIR", None)   # the default task is then the built-in demo set
    log = open(tmp_path_factory.mktemp("e2e-log") / "streamlit.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        log.seek(0)
        pytest.fail("streamlit did not start:\n" + log.read()[-3000:])
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser_page():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        context = browser.new_context(viewport={"width": 1400, "height": 2000})
        aborted: list[str] = []

        def guard(route):
            host = urlparse(route.request.url).hostname
            if route.request.url.startswith(("data:", "blob:", "about:")) or host in LOOPBACK:
                route.continue_()
            else:
                aborted.append(route.request.url)
                route.abort()

        context.route("**/*", guard)
        page = context.new_page()
        page.aborted = aborted
        yield page
        context.close()
        browser.close()


def _set_number(page, key: str, value) -> None:
    box = page.locator(f".st-key-{key} input")
    box.fill(str(value))
    box.press("Enter")
    page.wait_for_timeout(250)


def _settle(page, timeout: float = 120) -> None:
    """Wait until Streamlit has finished the script run (its running indicator is gone)."""
    page.wait_for_timeout(500)
    deadline = time.time() + timeout
    while time.time() < deadline and page.locator("[data-testid='stStatusWidget']").filter(
            has_text=re.compile("Running|Stop")).count():
        page.wait_for_timeout(250)
    page.wait_for_timeout(800)


def test_distill_then_attention_offline(server, browser_page):
    try:
        _walkthrough(server, browser_page)
    except BaseException:
        browser_page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
        raise


def _walkthrough(server, page):
    (ARTIFACTS / "failure.png").unlink(missing_ok=True)
    page.goto(server)
    page.get_by_role("heading", name="Distill").wait_for(timeout=60_000)
    page.locator(".st-key-start button").wait_for(timeout=60_000)
    assert page.locator(".st-key-task input").input_value() == "demo"
    side = page.locator("[data-testid='stSidebar']")
    for section in ("Data", "Distilled data"):           # collapsed expanders: open them to reach the inputs
        side.locator("summary").get_by_text(section, exact=True).click()
    for key, value in dict(seq_len=16, outer_steps=2, eval_every=1, eval_learners=1, real_batch_size=8,
                           max_length=32, eval_rows=60).items():
        _set_number(page, key, value)
    page.locator(".st-key-start button").click()

    chart = page.locator(".st-key-accuracy_chart")
    chart.locator(".main-svg").first.wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "01-distill-started.png"), full_page=True)
    # The curve appears once the first evaluation lands, then gains points as the run goes on.
    chart.locator("g.scatterlayer .trace").first.wait_for(timeout=120_000)
    points = lambda: chart.locator("g.scatterlayer .trace").first.locator("path.point").count()  # noqa: E731
    first = points()
    page.get_by_text(re.compile(r"·\s+done")).wait_for(timeout=180_000)
    page.wait_for_timeout(1500)
    chart = page.locator(".st-key-accuracy_chart")
    assert chart.locator("g.scatterlayer .trace").first.locator("path.point").count() > first >= 1
    page.screenshot(path=str(ARTIFACTS / "02-distill-done.png"), full_page=True)
    run_id = urlparse(page.url).query.split("run=")[-1]
    assert run_id, page.url

    page.goto(f"{server}/attention?run={run_id}")
    page.get_by_role("heading", name="Attention").wait_for(timeout=60_000)
    frame = page.frame_locator("iframe").first
    frame.locator("svg").first.wait_for(timeout=120_000)
    assert frame.locator("svg line, svg path").count() > 0   # bertviz drew attention lines
    _settle(page)
    page.screenshot(path=str(ARTIFACTS / "03-attention.png"), full_page=True)
    page.get_by_role("tab", name="Model view").click()
    page.frame_locator("iframe").nth(1).locator("svg").first.wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "04-attention-model-view.png"), full_page=True)

    page.goto(f"{server}/tokens?run={run_id}")
    page.get_by_role("heading", name="Nearest tokens").wait_for(timeout=60_000)
    page.get_by_text("Across checkpoints").wait_for(timeout=60_000)
    page.locator("[data-testid='stDataFrame']").first.wait_for(timeout=60_000)
    _settle(page)
    page.screenshot(path=str(ARTIFACTS / "05-tokens.png"), full_page=True)

    page.goto(f"{server}/runs?run={run_id}")
    page.get_by_role("heading", name="Runs").wait_for(timeout=60_000)
    page.locator(".st-key-run_accuracy .main-svg").first.wait_for(timeout=60_000)
    _settle(page)
    page.screenshot(path=str(ARTIFACTS / "06-runs.png"), full_page=True)

    # the committed reproduction study, and a link from one of its rows into the Attention page
    page.goto(f"{server}/results")
    page.get_by_role("heading", name="Results: does it reproduce the paper?").wait_for(timeout=60_000)
    page.locator(".st-key-bars_sst2_accuracy .main-svg").first.wait_for(timeout=60_000)
    _settle(page)
    page.screenshot(path=str(ARTIFACTS / "07-results.png"), full_page=True)
    links = page.locator("a[href*='run=sst2-hl-al-1x1']")
    assert links.count() >= 3          # Attention, Tokens and Curves of the row
    page.goto(f"{server}/attention?run=sst2-hl-al-1x1")   # where those links lead
    page.get_by_role("heading", name="Attention").wait_for(timeout=60_000)
    page.frame_locator("iframe").first.locator("svg").first.wait_for(timeout=120_000)
    assert page.get_by_text("sst2-hl-al-1x1").count() >= 1

    assert not page.locator("[data-testid='stException']").count()
    (ARTIFACTS / "aborted-requests.txt").write_text("".join(u + "\n" for u in page.aborted))
    assert page.aborted == []      # the whole app, bertviz included, asked for nothing off this machine
