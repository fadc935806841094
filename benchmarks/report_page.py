"""The ``report`` command on the sample models: wall time of ``inspect`` (header only), ``report``
(levels decoded) and ``report --html --model`` (plus the plots), the page's size, and whether it
names anything on the network; with Chromium installed, a screenshot of the LeNet-5 page.

    python benchmarks/report_page.py [--screenshot benchmarks/report_screenshot.png]

Each model is compressed in the automatic mode with its calibration data first (CLI wall times,
interpreter start and imports included, one run each: the machine is shared).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("lenet5", "crnn", "lenet300")
NETWORK = re.compile(r"https?:|//[a-z0-9]|<script|<link|@import|src=|url\((?!#)", re.IGNORECASE)


def onnxdc(*args: object) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "onnxdc", *map(str, args)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def screenshot(page: Path, out: Path, work: Path) -> None:
    """Render ``page`` in headless Chromium at 1280 x 2400 and save it as a palette PNG (small)."""
    from PIL import Image

    raw = work / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={work / 'profile'}", f"--screenshot={raw}", "--window-size=1280,2400",
                    page.as_uri()], check=True, capture_output=True)
    Image.open(raw).convert("RGB").quantize(colors=64).save(out, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--screenshot", type=Path, help="Save the LeNet-5 page's screenshot here (needs chromium).")
    args = ap.parse_args()
    print("| model | container bytes | inspect s | report s | report --html s | page KB | network refs |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in MODELS:
            model = ROOT / "models" / f"{name}.onnx"
            box = work / f"{name}.onnxdc"
            onnxdc("compress", model, "--calib", ROOT / "models" / f"{name}.calib.npz", "-o", box, "-q")
            t_inspect = onnxdc("inspect", box)
            t_report = onnxdc("report", box)
            page = work / f"{name}.html"
            t_html = onnxdc("report", box, "--html", page, "--model", model)
            text = page.read_text(encoding="utf-8")
            print(f"| {name} | {box.stat().st_size:,} | {t_inspect:.2f} | {t_report:.2f} | {t_html:.2f} | "
                  f"{page.stat().st_size / 1024:.0f} | {len(NETWORK.findall(text))} |")
            if name == "lenet5" and args.screenshot is not None:
                if shutil.which("chromium") is None:
                    print("chromium is not installed: no screenshot", file=sys.stderr)
                else:
                    screenshot(page, args.screenshot, work)
                    print(f"\nscreenshot: {args.screenshot} ({args.screenshot.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
