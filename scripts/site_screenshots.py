"""Screenshots of two pages of the built course site, in headless Chromium.

    bash scripts/build_site.sh /tmp/site && python scripts/site_screenshots.py /tmp/site docs/screenshots

writes site-api-textbook.png (the top of the textbook's API page: functions
with their typeset equations) and site-notebook-04.png (notebook 4's section
on why u is trained to lower V). Headless Chromium draws nothing when a page
is scrolled, so the section is cut out of a screenshot of the whole page, at
the offset the page itself reports. Needs Debian's chromium and Pillow.
"""
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

CHROMIUM = "/usr/bin/chromium"
WIDTH, TALL = 1280, 8700
SECTION = "why-u-is-trained-to-lower-v-and-what-keeps-d-from-emptying"


def chromium(*args):
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                               "--disable-background-networking", "--no-first-run", "--hide-scrollbars",
                               f"--user-data-dir={profile}", "--virtual-time-budget=20000", *args],
                              capture_output=True, text=True, timeout=300, check=True).stdout


def section_offset(page: Path, section: str) -> int:
    """The section's distance from the top of the page, as laid out at WIDTH x TALL."""
    html = page.read_text(encoding="utf-8").replace("</body>", (
        '<script>window.addEventListener("load", () => setTimeout(() => document.body.setAttribute("data-y", '
        f'Math.round(document.getElementById("{section}").getBoundingClientRect().top + window.scrollY)), 500));'
        "</script></body>"))
    probe = page.with_name("_offset_probe.html")
    probe.write_text(html, encoding="utf-8")
    try:
        dom = chromium(f"--window-size={WIDTH},{TALL}", "--dump-dom", probe.as_uri())
    finally:
        probe.unlink()
    return int(re.search(r'data-y="(\d+)"', dom).group(1))


def main(site: Path, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    chromium(f"--window-size={WIDTH},2000", f"--screenshot={out / 'site-api-textbook.png'}", (site / "api.html").as_uri())
    page = site / "notebooks" / "04_forward_and_backward_masks.html"
    y = section_offset(page, SECTION)
    with tempfile.TemporaryDirectory() as tmp:
        whole = Path(tmp) / "whole.png"
        chromium(f"--window-size={WIDTH},{TALL}", f"--screenshot={whole}", page.as_uri())
        Image.open(whole).crop((0, y - 30, WIDTH, y + 1100)).save(out / "site-notebook-04.png", optimize=True)
    print(f"wrote {out / 'site-api-textbook.png'} and {out / 'site-notebook-04.png'}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/site_screenshots.py SITE OUT_FOLDER")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
