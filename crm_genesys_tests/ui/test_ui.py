"""The Dagster UI over an instance that ran the demo, in headless Chromium (Debian's): the
partition view, a window's checks naming their window, and the quarantine samples render.

Needs /usr/bin/chromium (`apt-get install chromium`; `.ci/run` installs it): skipped without
it, failed instead when CRM_GENESYS_REQUIRE_SERVICES=1. Screenshots go to a temporary directory,
or to CRM_GENESYS_SCREENSHOT_DIR (docs/screenshots keeps the committed ones).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# Chromium in this sandbox: no sandbox (root), no GPU, and nothing that reaches for a network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Ui:
    url: str
    first_window: str
    last_window: str
    shots: Path
    root: Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_up(url: str, server: subprocess.Popen[bytes], deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"dagster-webserver exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"dagster-webserver did not answer within {deadline_s} s")


def _last_window(demo_output: str) -> str:
    """The last window the demo synced (its per-window lines are `  <key>: ...`)."""
    keys = re.findall(r"^  (\d{4}-\d{2}-\d{2}-\d{2}:\d{2}): ", demo_output, re.MULTILINE)
    assert keys, demo_output
    return keys[-1]


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    if not CHROMIUM.exists():
        if os.environ.get("CRM_GENESYS_REQUIRE_SERVICES") == "1":
            pytest.fail("/usr/bin/chromium is missing (apt-get install chromium)")
        pytest.skip("/usr/bin/chromium is missing (apt-get install chromium)")
    root = tmp_path_factory.mktemp("ui")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GENESYS_", "CRM_", "SYNC_STATE", "DAGSTER_"))
    }
    env.update(DAGSTER_HOME=str(home), CRM_GENESYS_DATA_DIR=str(root / "data"))
    demo = subprocess.run(
        [str(BIN / "crm-genesys"), "demo", "--rows", "1200", "--windows", "3"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    first = subprocess.run(
        [str(BIN / "crm-genesys"), "crm", "first-window"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    env["CRM_GENESYS_PARTITION_START"] = first
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            str(BIN / "dagster-webserver"),
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_until_up(url, server, 90)
        shots = Path(os.environ.get("CRM_GENESYS_SCREENSHOT_DIR") or root / "shots")
        shots.mkdir(parents=True, exist_ok=True)
        yield Ui(url, first, _last_window(demo.stdout), shots, root)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.fixture(scope="module")
def page(ui: Ui, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 1000},
        )
        try:
            yield browser.new_page()
        finally:
            browser.close()


def _files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()] if directory.exists() else []


def _dismiss_dialogs(page) -> None:
    """The UI greets a new browser with a newsletter dialog over the page: skip it."""
    skip = page.get_by_role("button", name="Skip")
    if skip.count() and skip.first.is_visible():
        skip.first.click()


def test_the_ui_shows_partitions_checks_and_quarantine_samples(ui: Ui, page) -> None:
    """One test (xdist keeps it on one worker: one demo, one webserver, one browser)."""
    # Every window of the demo succeeded: no frame of contact data is left (what is left is the
    # small JSON summary of the tour's reconciliation run), and nothing was pickled.
    left = _files(ui.root / "data" / "frames")
    assert [p for p in left if p.suffix == ".parquet"] == []
    assert all(p.name == "meta.json" and "__frame__" not in p.read_text() for p in left), left
    # Runs launched by the daemon (the live sensor's) leave compute logs; no pickled output.
    stored = _files(ui.root / "dagster_home" / "storage")
    assert [p for p in stored if "compute_logs" not in p.parts] == []

    # The partition view: the demo's windows from the first one on, a window's figures.
    page.goto(
        f"{ui.url}/assets/genesys_sync?view=partitions&partition={ui.last_window}",
        wait_until="networkidle",
    )
    page.get_by_text(ui.first_window).first.wait_for(timeout=60_000)
    _dismiss_dialogs(page)
    page.get_by_text("Missing (0)").first.wait_for(timeout=30_000)
    page.get_by_text("budget_share").first.wait_for(timeout=30_000)
    page.screenshot(path=str(ui.shots / "partitions.png"))

    # A window's checks, each result naming the window it judged.
    page.goto(f"{ui.url}/assets/genesys_sync?view=checks", wait_until="networkidle")
    page.get_by_text("screen_pop_ready").first.wait_for(timeout=60_000)
    _dismiss_dialogs(page)
    page.get_by_text("screen_pop_ready").first.click()
    page.get_by_text(f"window {ui.last_window}:").first.wait_for(timeout=30_000)
    page.get_by_text("numbers_checked").first.wait_for(timeout=30_000)
    page.screenshot(path=str(ui.shots / "checks.png"))

    # The quarantine samples: a masked table.
    page.goto(f"{ui.url}/assets/normalized_contacts?view=checks", wait_until="networkidle")
    page.get_by_text("quarantine_rate").first.wait_for(timeout=60_000)
    _dismiss_dialogs(page)
    page.get_by_text("quarantine_rate").first.click()
    page.get_by_text(f"window {ui.last_window}:").first.wait_for(timeout=30_000)
    page.get_by_text("business_key_masked").first.wait_for(timeout=30_000)
    page.screenshot(path=str(ui.shots / "quarantine-check.png"))
