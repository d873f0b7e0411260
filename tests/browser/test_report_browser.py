"""Open the HTML report in headless Chromium: views render, no console errors, screenshot.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (CI installs them) and the
``selenium`` Python package. The browser runs with networking features off and a fresh
profile, so anything the report tried to fetch from the internet would fail and show up
as a console error.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tempo_lens import PruningConfig, RelativeRule, TempoConfig, generate, make_tiny_model
from tempo_lens.display import render_run

pytestmark = pytest.mark.browser

APT_HINT = "apt-get install -y chromium chromium-driver"
SCREENSHOT_DIR = Path(os.environ.get("TEMPO_LENS_SCREENSHOTS", tempfile.gettempdir()))


def _chromium_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        if os.environ.get("TEMPO_LENS_REQUIRE_BROWSER"):  # CI: a missing browser is a failure
            pytest.fail(f"headless Chromium not found: {APT_HINT}")
        pytest.skip(f"headless Chromium not found (browser={browser}, driver={driver}): {APT_HINT}")
    return browser, driver


@pytest.fixture(scope="module")
def driver():
    if os.environ.get("TEMPO_LENS_REQUIRE_BROWSER"):
        import selenium.webdriver as webdriver
    else:
        webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    from selenium.webdriver.chrome.service import Service

    browser, chromedriver = _chromium_paths()
    profile = tempfile.mkdtemp(prefix="tempo_chromium_")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager (which would download a driver) is not used.
    drv = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from tempo_lens.analysis.run import analyze_data
    from tempo_lens.hooks.capture import AttentionCapture

    model = make_tiny_model()
    cfg = TempoConfig(
        selection_threshold=0.05, max_steps=5, prune=PruningConfig(rule=RelativeRule(ratio=0.7))
    )
    cap = AttentionCapture()
    trace = generate(model, [1, 2, 3, 4, 5], cfg, observers=[cap])
    data = cap.result(trace)
    out = tmp_path_factory.mktemp("run")
    render_run(out, trace, data, analyze_data(trace, data))
    return out / "report.html"


def _wait_for(drv, script: str, timeout: float = 20.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, timeout).until(lambda d: d.execute_script(script))


def test_report_renders_offline_without_console_errors(driver, report: Path) -> None:
    driver.get(report.as_uri())
    # every circuitsvis mount point gets React children once the inline bundle ran
    _wait_for(
        driver,
        "const els = document.querySelectorAll('.tempo-cv');"
        "return els.length > 0 && [...els].every(e => e.children.length > 0);",
    )
    n_cv = driver.execute_script("return document.querySelectorAll('.tempo-cv').length")
    assert n_cv >= 2
    heads = driver.execute_script(
        "return document.querySelector('[data-component=AttentionHeads]').innerText"
    )
    assert "L1H0" in heads  # head names passed through to the rendered widget
    assert driver.execute_script("return typeof window.CircuitsVis") == "object"
    # the token tree SVG: one node per generated token, the clean path and pruned marks
    n_nodes = driver.execute_script(
        "return document.querySelectorAll('.tempo-tree svg g.node[data-index]').length"
    )
    n_clean = driver.execute_script(
        "return document.querySelectorAll('.tempo-tree g.node.clean').length"
    )
    assert n_nodes > 0 and n_clean == 5
    assert (
        driver.execute_script(
            "return document.querySelectorAll('.tempo-tree g.node.pruned').length"
        )
        > 0
    )
    # every embedded figure decoded
    imgs = driver.execute_script(
        "return [...document.images].map(i => [i.complete, i.naturalWidth])"
    )
    assert len(imgs) >= 5 and all(ok and w > 0 for ok, w in imgs)
    # screenshots: the top (text, summary, tree) and the first circuitsvis view
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    top = SCREENSHOT_DIR / "tempo_report_top.png"
    assert driver.save_screenshot(str(top))
    shot = SCREENSHOT_DIR / "tempo_report.png"
    driver.execute_script("document.querySelector('.tempo-cv').scrollIntoView({block: 'start'})")
    assert driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000 and top.stat().st_size > 10_000
    logs = driver.get_log("browser")
    errors = [e for e in logs if e["level"] in ("SEVERE", "ERROR")]
    assert not errors, errors
    # nothing was fetched from anywhere but the file itself
    urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(u.startswith(("data:", "file:")) for u in urls), urls
