"""report.html renders in headless Chromium with no console error and every image loaded.

Skipped when Debian's ``chromium`` is not installed (CI: ``apt-get install -y chromium``).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]

# Appended to a copy of the page: marks the body with the images that failed to decode.
IMAGE_CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute("src"));
  document.body.setAttribute("data-images", String(imgs.length));
  document.body.setAttribute("data-broken", bad.join(" ") || "none");
  if (bad.length) console.error("broken images: " + bad.join(" "));
});
</script>"""


def _render(page, profile):
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    return proc.returncode, proc.stdout, console


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_without_console_errors(report_dir, tmp_path):
    page = report_dir / "report.html"
    rc, dom, console = _render(page, tmp_path / "profile1")
    assert rc == 0 and "<h1>" in dom and "nclt report" in dom
    assert console == []  # the page has no script: any console message is a problem
    # the same page plus a check that every <img> decoded (same folder: same relative links)
    probe = report_dir / "_render_check.html"
    probe.write_text(page.read_text().replace("</body>", IMAGE_CHECK + "</body>"))
    try:
        rc, dom, console = _render(probe, tmp_path / "profile2")
    finally:
        probe.unlink()
    n_img = len(re.findall(r"<img ", page.read_text()))
    assert rc == 0 and console == []
    assert f'data-images="{n_img}"' in dom and 'data-broken="none"' in dom
