"""Open an HTML file in headless Chromium and read back what a person would see.

Console messages come from Chromium's log (``INFO:CONSOLE``); requests made by the page come
from its network log (the browser's own background requests carry no page origin and are left
out); the page writes ``data-*`` attributes on <body> once its plots have rendered.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Page:
    console: list[str]
    page_requests: list[str]
    errors: list[str]
    plots_rendered: int
    svg_layers: int


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def render(chromium: str, html: Path, tmp: Path) -> Page:
    netlog = tmp / f"{html.stem}-net.json"
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp / 'chromium-profile'}", "--virtual-time-budget=15000",
         "--enable-logging=stderr", "--v=0", f"--log-net-log={netlog}",
         "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing can be fetched even if something tried
         "--dump-dom", html.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    requests = []
    if netlog.exists():
        text = netlog.read_text()
        try:
            events = json.loads(text)["events"]
        except json.JSONDecodeError:  # Chromium may leave the log unterminated
            events = json.loads(text.rstrip().rstrip(",") + "]}")["events"]
        for e in events:
            p = e.get("params", {})
            url = p.get("url", "")
            if url.startswith(("http:", "https:", "ws:", "wss:")) and p.get("initiator", "not an origin") != "not an origin":
                requests.append(url)
    dom = proc.stdout

    def attr(name: str) -> str:
        m = re.search(rf'{name}="([^"]*)"', dom)
        return m.group(1) if m else ""

    errors = json.loads(attr("data-errors").replace("&quot;", '"') or "[]")
    return Page(console, sorted(set(requests)), errors, int(attr("data-plots-rendered") or 0), int(attr("data-svg-layers") or 0))
