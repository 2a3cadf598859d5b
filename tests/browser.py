"""A real headless browser for the page tests: Debian's Chromium driven by Selenium through chromium-driver.

Nothing is downloaded: `scripts/install.sh` installs the `chromium` and `chromium-driver` packages, and
Selenium is told where both are, so its manager never looks for a browser on the network.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHROMIUM = os.environ.get("BACKDROP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("BACKDROP_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"


def chromium(width: int = 1280, height: int = 900):
    """A headless `webdriver.Chrome` on Debian's Chromium; the caller quits it (use it as a context manager)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).exists():
            raise RuntimeError(f"{path}: not found; install Debian's {package} (scripts/install.sh does it as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def screenshot(driver, path: Path) -> Path:
    """Save the viewport as PNG (parents created), for the README's pictures."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(path)):
        raise RuntimeError(f"{path}: the browser did not write a screenshot")
    return path


def wait_until_up(url: str, timeout: float = 60, what: str = "server") -> None:
    """Poll `url` until it answers 200 (a server started in a thread or process for a page test)."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{what} did not answer {url} within {timeout:.0f} s"
        time.sleep(0.2)
