"""Real headless Chromium for tests (Debian's chromium + chromium-driver, installed by
scripts/bootstrap), the HTTP server in a thread beside it, and screenshots of each step.

If Chromium or its driver is missing or cannot start, the test fails with the reason: nothing is
skipped.

The microphone: Chromium's fake capture device can be fed a WAV file (``capture``), which it loops.
Whether the page may use it is Chromium's own permission, set per origin with :func:`microphone`
(the DevTools protocol's ``Browser.setPermission``); before that, headless Chromium dismisses the
request, as an admin who closes the prompt would.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Literal, Protocol, TypeVar

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from ooma_moh.config import Settings
from ooma_moh.http.server import start_http

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
#: Where screenshots go: build/test-output/browser/<test>/NN-step.png (build/ is not in git)
OUTPUT = Path(__file__).resolve().parent.parent / "build" / "test-output" / "browser"
#: Chromium on a machine with no network and no screen (flags from the machine's notes).
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1000,1100",
    "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",
)
#: elements that can carry an accessible name the page promises
NAMED = "h1, button, input, select, a, progress, label, summary, meter"
T = TypeVar("T")


class Chromium(Protocol):
    """What the ``browser`` fixture gives: :func:`chromium`, ``with browser(lang) as driver``."""

    def __call__(self, lang: str, capture: Path | None = None) -> AbstractContextManager[webdriver.Chrome]: ...


@contextlib.contextmanager
def chromium(lang: str, capture: Path | None = None) -> Iterator[webdriver.Chrome]:
    """A new Chromium whose preferred language is ``lang`` (its Accept-Language); with ``capture``
    (a WAV file), a fake microphone that plays it in a loop (allow it with :func:`microphone`)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        assert path.exists(), f"{path} is missing: run scripts/bootstrap (Debian chromium, chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    if capture is not None:
        assert capture.is_file(), capture
        options.add_argument("--use-fake-device-for-media-stream")
        options.add_argument(f"--use-file-for-fake-audio-capture={capture}")
    options.add_experimental_option("prefs", {"intl.accept_languages": f"{lang},{lang}-{lang.upper()}"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """``serve http`` for ``settings`` on a free loopback port, in a thread; yields its base URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="http-under-test", daemon=True)
    thread.start()
    started = asyncio.run_coroutine_threadsafe(
        start_http(dataclasses.replace(settings, http_listen="127.0.0.1:0")), loop
    )
    listening = started.result(30)
    port = listening.port
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(listening.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def microphone(driver: webdriver.Chrome, origin: str, allowed: bool) -> None:
    """Chromium's own permission for ``origin`` to use the microphone, as if the admin had
    answered its prompt (or the site settings) with Allow or Block."""
    driver.execute_cdp_cmd(
        "Browser.setPermission",
        {"permission": {"name": "microphone"}, "setting": "granted" if allowed else "denied", "origin": origin},
    )


def local_link(url: str, base: str) -> str:
    """A printed login link pointed at the server under test."""
    return base + url[url.index("/login/") :]


class Screens:
    """Numbered screenshots of one test's steps."""

    def __init__(self, driver: webdriver.Chrome, test_name: str) -> None:
        self.driver, self.count = driver, 0
        self.dir = OUTPUT / re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("*.png"):
            old.unlink()

    def shot(self, step: str, whole_page: bool = False) -> Path:
        """The window (or, with ``whole_page``, the whole page, however long) as NN-step.png."""
        self.count += 1
        path = self.dir / f"{self.count:02d}-{step}.png"
        size = self.driver.get_window_size()
        if whole_page:
            height = self.driver.execute_script("return document.documentElement.scrollHeight")
            self.driver.set_window_size(size["width"], max(size["height"], int(height) + 150))
        try:
            assert self.driver.save_screenshot(str(path)), path
        finally:
            if whole_page:
                self.driver.set_window_size(size["width"], size["height"])
        return path


def named(driver: webdriver.Chrome, name: str, role: str | None = None, within: WebElement | None = None) -> WebElement:
    """The one visible element whose accessible name (as Chromium computes it) is ``name``, on the
    page or ``within`` one of its parts (the same control can appear once per file shown)."""
    found = [
        e
        for e in (within or driver).find_elements(By.CSS_SELECTOR, NAMED)
        if e.is_displayed() or e.get_attribute("type") == "file"
    ]
    matches = [e for e in found if e.accessible_name == name and (role is None or e.aria_role == role)]
    assert len(matches) == 1, (name, role, sorted({e.accessible_name for e in found}))
    return matches[0]


def wait(
    driver: webdriver.Chrome,
    condition: Callable[[webdriver.Chrome], Literal[False] | T],
    timeout: float = 30.0,
    message: str = "",
) -> T:
    """Poll ``condition(driver)`` until it is truthy (fails the test after ``timeout``)."""
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, message)


def state(driver: webdriver.Chrome) -> str:
    """The page's status (``data-state`` of its status line)."""
    return driver.find_element(By.ID, "status").get_attribute("data-state") or ""
