"""The interactive optimizer race (examples/interactive_race.py) in a real headless browser.

The page is generated with fastadam's kernels, then opened in Debian's chromium through
chromium-driver and selenium: it must load with no console error, draw the four paths, and
redraw them when a control moves. Needs plotly, selenium and chromium + chromium-driver
(``.ci/run``'s docs step installs them); skips, saying which is missing, without them.
"""

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

import fastadam

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "interactive_race.py")
FASTADAM_ROOT = os.path.dirname(os.path.dirname(fastadam.__file__))
WATCHDOG = 120          # seconds: a hung page fails with a message, it does not hang CI


def _missing():
    for module in ("plotly", "selenium"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install \"fastadam[docs]\")"
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        return "chromium is not installed (apt-get install chromium chromium-driver)"
    if not shutil.which("chromedriver"):
        return "chromedriver is not installed (apt-get install chromium-driver)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp("race") / "optimizer_race.html"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (FASTADAM_ROOT, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, SCRIPT, "--out", str(out)], capture_output=True,
                          text=True, encoding="utf-8", env=env, cwd=str(out.parent),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "races computed with fastadam" in proc.stdout
    return out


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    driver.set_page_load_timeout(WATCHDOG)
    driver.set_script_timeout(WATCHDOG)
    yield driver
    driver.quit()


def _wait(driver, js, what):
    deadline = time.monotonic() + WATCHDOG
    while time.monotonic() < deadline:
        if driver.execute_script(js):
            return
        time.sleep(0.1)
    pytest.fail(f"gave up after {WATCHDOG} s waiting for {what}")


def _paths(driver):
    """What is drawn: the 2D paths over the contours (x, y per optimizer), the loss curves
    (step, loss per optimizer) and the surface's first row."""
    return json.loads(driver.execute_script("""
        const gd = document.getElementById('race');
        const out = {paths: {}, loss: {}};
        gd.data.forEach(t => {
            if (t.type !== 'scatter' || t.mode !== 'lines') return;
            const where = t.xaxis === 'x' || !t.xaxis ? 'paths'
                        : t.xaxis === 'x2' ? 'loss' : null;
            if (where) out[where][t.name] = [Array.from(t.x || []), Array.from(t.y || [])];
        });
        out.surface = Array.from(gd.data.find(t => t.type === 'surface').z[0]);
        return JSON.stringify(out);"""))


def _move(driver, control, value):
    """Set a control as a user would (its value, then its input and change events) and wait
    until the page has redrawn because of them."""
    drawn = driver.execute_script("return window.raceDraws || 0")
    driver.execute_script("""
        const el = document.getElementById(arguments[0]);
        el.value = arguments[1];
        el.dispatchEvent(new Event('input', {bubbles: true}));
        el.dispatchEvent(new Event('change', {bubbles: true}));""", control, value)
    _wait(driver, f"return (window.raceDraws || 0) > {drawn}",
          f"the page to redraw after moving {control}")


def _console_errors(driver):
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def test_page_is_self_contained_and_small_enough(page):
    html = page.read_text(encoding="utf-8")
    # plotly.js is inlined: no script or stylesheet is loaded from anywhere
    assert re.findall(r"<script[^>]*\bsrc=|<link[^>]*\bhref=", html) == []
    assert "Plotly.newPlot" in html and len(html) > 3 * 2**20     # the library is in the file
    assert page.stat().st_size < 10 * 2**20


def test_page_loads_without_console_errors_and_draws_four_paths(page, browser):
    browser.get(page.as_uri())
    _wait(browser, "return window.raceReady === true", "the page's first drawing")
    assert _console_errors(browser) == []
    drawn = _paths(browser)
    for name in ("SGD", "SGD + momentum", "RMSprop", "Adam"):
        for panel in ("paths", "loss"):
            xs, ys = drawn[panel][name]
            assert len(xs) > 10 and len(xs) == len(ys), (panel, name)
            assert all(math.isfinite(v) for v in xs + ys), (panel, name)
    drawn = drawn["paths"]
    # the ravine at the default lr 0.1, from (-4.5, 1.5): every path starts there
    assert drawn["Adam"][0][0] == pytest.approx(-4.5) and drawn["Adam"][1][0] == pytest.approx(1.5)
    rows = browser.find_elements("css selector", "#readout tbody tr")
    assert len(rows) == 4


def test_moving_controls_changes_the_drawn_paths(page, browser):
    browser.get(page.as_uri())
    _wait(browser, "return window.raceReady === true", "the page's first drawing")
    before = _paths(browser)

    _move(browser, "lr", 2)                 # learning rate 0.1 -> 0.01
    after_lr = _paths(browser)
    changed = [(panel, name) for panel in ("paths", "loss") for name in before[panel]
               if before[panel][name] != after_lr[panel][name]]
    assert len(changed) == 8, f"only {changed} changed with the learning rate"
    assert after_lr["surface"] == before["surface"]        # same landscape

    _move(browser, "beta1", 0)              # Adam's beta1 0.9 -> 0.5: only Adam's path moves
    after_beta = _paths(browser)
    moved = {name for name in after_lr["paths"]
             if after_lr["paths"][name] != after_beta["paths"][name]}
    assert "Adam" in moved and not moved & {"SGD", "SGD + momentum", "RMSprop"}, moved

    _move(browser, "landscape", 1)          # the ravine -> Rosenbrock
    after_land = _paths(browser)
    assert after_land["surface"] != after_beta["surface"]
    sgd = after_land["paths"]["SGD"]
    assert sgd[0][0] == pytest.approx(-1.2) and sgd[1][0] == pytest.approx(1.0)

    _move(browser, "step", 5)               # the step slider replays the race
    short = _paths(browser)["paths"]["Adam"]
    assert len(short[0]) == 6               # the start and 5 steps
    assert _console_errors(browser) == []
