"""The web app in a real browser: Playwright driving Debian's Chromium, headless.

``AppPage`` serves a site written by ``mobile_derm.web_app``, opens it on a phone-sized
viewport, records every request the page makes, and analyses photo files through the
page's own file input. ``web_agreement`` runs the page and ``Predictor`` (what
``mobile-derm predict`` runs) on the same photos and compares the gate verdict, top-1,
abstention and the malignancy decision at every operating point; it also times the
page's load and per-photo inference.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from pathlib import Path

from mobile_derm.errors import ConfigError, DataError

CHROMIUM_ENV = "MOBILE_DERM_CHROMIUM"
# Headless in a closed network: no background connections, no first-run or update traffic
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
PHONE_VIEWPORT = {"width": 360, "height": 780}
LOAD_TIMEOUT_MS = 120_000
PHOTO_TIMEOUT_MS = 120_000
STATES_DONE = ("result", "error")


def chromium_path() -> Path:
    """The Chromium to drive: $MOBILE_DERM_CHROMIUM, else Debian's (``chromium`` on PATH)."""
    named = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or shutil.which("chromium-browser")
    if not named or not Path(named).is_file():
        raise ConfigError(None, f"no Chromium found (install Debian's package 'chromium', or set {CHROMIUM_ENV})")
    return Path(named)


_BROWSER: dict = {}  # one Playwright and one Chromium per process, shared by every AppPage


def _browser():
    """The process's headless Chromium (started on first use, stopped at exit): Playwright's
    sync API runs one instance per thread, so every page shares it."""
    if not _BROWSER:
        import atexit

        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            raise ConfigError(None, "the browser needs the 'playwright' package (pip install -e '.[test]')") from None
        executable = chromium_path()
        playwright = sync_playwright().start()
        try:
            browser = playwright.chromium.launch(executable_path=str(executable), args=list(CHROMIUM_FLAGS),
                                                 headless=True)
        except Exception as exc:  # Playwright's errors carry a page of logs: keep the first line
            playwright.stop()
            raise ConfigError(executable, f"Chromium would not start ({str(exc).strip().splitlines()[0]})") from None
        _BROWSER.update(playwright=playwright, browser=browser)
        atexit.register(stop_browser)
    return _BROWSER["browser"]


def stop_browser() -> None:
    """Close the shared Chromium (the next AppPage starts another)."""
    if not _BROWSER:
        return
    for step in (lambda: _BROWSER["browser"].close(), lambda: _BROWSER["playwright"].stop()):
        try:
            step()
        except Exception:  # already gone at interpreter exit
            pass
    _BROWSER.clear()


class AppPage:
    """``with AppPage(site) as page: page.analyse(photo)``: the site on a localhost server,
    a fresh browser context (no cache, no storage) with one tab on a 360-px-wide viewport,
    every request recorded in ``requests`` (url, and whether it came after the app said it
    was ready)."""

    def __init__(self, site: str | Path, viewport: dict | None = None):
        from mobile_derm.web_app import SiteServer

        self.server = SiteServer(site)
        self.viewport = viewport or PHONE_VIEWPORT
        self.requests: list[dict] = []
        self.console: list[str] = []
        self.load_ms: float | None = None
        self._ready = False

    def __enter__(self) -> "AppPage":
        self.url = self.server.__enter__()
        try:
            self.context = _browser().new_context(viewport=self.viewport)
        except Exception:
            self.server.__exit__(None, None, None)
            raise
        self.page = self.context.new_page()
        self.page.on("request", lambda r: self.requests.append({"url": r.url, "after_ready": self._ready}))
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        return self

    def open(self) -> dict:
        """Load the app and wait until it is ready or shows an error: {"state", "status", "error", "load_ms"}."""
        started = time.perf_counter()
        self.page.goto(self.url + "index.html")
        self.page.wait_for_function(
            "['ready', 'error'].includes(document.body.dataset.state)", timeout=LOAD_TIMEOUT_MS)
        self.load_ms = (time.perf_counter() - started) * 1000
        self._ready = True
        return {**self.page_state(), "load_ms": self.load_ms}

    def page_state(self) -> dict:
        return self.page.evaluate(
            "() => ({state: document.body.dataset.state, status: document.getElementById('status').textContent,"
            " error: document.getElementById('error').hidden ? null : document.getElementById('error').textContent})")

    def analyse(self, photo: str | Path) -> dict:
        """Give the photo to the page's file input, as a person would; the page's result
        (the keys of ``mobile-derm predict``'s output, or {"error": message}) plus what
        the page shows in its error box."""
        self.page.set_input_files("#file", str(photo))
        self.page.wait_for_function(f"{list(STATES_DONE)}.includes(document.body.dataset.state)",
                                    timeout=PHOTO_TIMEOUT_MS)
        result = self.page.evaluate("() => window.mobileDerm.lastResult")
        return {**result, "shown_error": self.page_state()["error"]}

    def screenshot(self, path: str | Path) -> Path:
        self.page.screenshot(path=str(path), full_page=True)
        return Path(path)

    def __exit__(self, *exc) -> None:
        try:
            self.context.close()
        finally:
            self.server.__exit__(*exc)


# ------------------------------------------------------------------ agreement with predict

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif")


def collect_photos(paths: list[str | Path], per_folder: int) -> list[Path]:
    """Files as given; from each folder (searched recursively) ``per_folder`` photos evenly
    spaced through its sorted list, so every part of a set is represented."""
    photos: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_file():
            photos.append(entry)
            continue
        if not entry.is_dir():
            raise DataError(entry, "no such photo or folder")
        found = sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not found:
            raise DataError(entry, "no photos in this folder")
        step = max(1, len(found) / per_folder)
        photos += [found[int(i * step)] for i in range(min(per_folder, len(found)))]
    return photos


def degraded_photos(sources: list[Path], out: Path, seed: int = 0) -> list[Path]:
    """One degraded copy of each source photo (mobile_derm_quality.degrade: every kind in
    turn, at its middle severity), written as PNG into ``out``."""
    import cv2

    from mobile_derm_quality import degrade
    from mobile_derm_quality.decode import read_image

    out.mkdir(parents=True, exist_ok=True)
    kinds = list(degrade.DEGRADATIONS)
    written = []
    for i, source in enumerate(sources):
        kind = kinds[i % len(kinds)]
        levels = degrade.DEGRADATIONS[kind]["levels"]
        image = degrade.apply(read_image(source), kind, levels[len(levels) // 2], seed=seed + i)
        path = out / f"{i:03d}_{kind}_{source.stem}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        written.append(path)
    return written


def generated_non_skin(out: Path, n: int, size: int = 320) -> list[Path]:
    """``n`` generated images that are nothing like skin (noise, flat colours, stripes, text), as PNG."""
    import cv2

    from mobile_derm.model.familiarity import non_skin_images

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(non_skin_images(size, n, seed=1)):
        path = out / f"non_skin_{i:03d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def _decisions(result: dict) -> dict:
    """The compared parts of one result (the page's or predict's)."""
    if "error" in result:
        return {"error": True}
    out = {"error": False, "classified": result["classified"],
           "gate": (result.get("quality") or {}).get("decision")}
    if result["classified"]:
        out.update(top1=result["top_k"][0]["label"], abstained=result["abstained"],
                   refer={name: p["refer"] for name, p in result["malignancy"]["operating_points"].items()})
    return out


COMPARED = ("gate", "top1", "abstained", "malignancy")


def compare(page: dict, reference: dict, gate_on_page: bool) -> dict:
    """Per compared decision: True (agree), False, or None (the gate, when the page has
    none). A photo that neither side classifies (the gate rejected it on both) agrees on
    every classifier decision: neither names a class; one that only one side classifies
    agrees on none."""
    a, b = _decisions(page), _decisions(reference)
    if a["error"] or b["error"]:
        same = a["error"] == b["error"]
        return {key: same for key in COMPARED} | {"gate": same if gate_on_page else None}
    agree = {"gate": (a["gate"] == b["gate"]) if gate_on_page else None}
    if not (a["classified"] and b["classified"]):
        return agree | {key: a["classified"] == b["classified"] for key in ("top1", "abstained", "malignancy")}
    agree["top1"] = a["top1"] == b["top1"]
    agree["abstained"] = a["abstained"] == b["abstained"]
    agree["malignancy"] = a["refer"] == b["refer"]
    return agree


def web_agreement(models: str | Path, photos: list[Path], out: str | Path, variant: str | None = None,
                  progress: bool = True) -> dict:
    """Run the web page and ``Predictor`` on ``photos``; write web_agreement.json/.md into
    ``out`` and return the summary. Without a gate on the page, predict runs without its
    gate too (both classify every photo they can decode) and the gate is "not measured"."""
    from tqdm import tqdm

    from mobile_derm.app.predict import Predictor
    from mobile_derm.errors import MobileDermError
    from mobile_derm.io_utils import atomic_write_text
    from mobile_derm.web_app import DEFAULT_VARIANT, write_site

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    site = write_site(models, out / "site", variant or DEFAULT_VARIANT)
    config = json.loads((site / "app_config.json").read_text())
    gate_on_page = config["gate"] is not None
    predictor = Predictor(site / config["classifier"]["file"])
    rows = []
    with AppPage(site) as app:
        opened = app.open()
        if opened["state"] != "ready":
            raise ConfigError(site, f"the page did not start: {opened['error']}")
        requests_at_ready = len(app.requests)
        for photo in tqdm(photos, desc="web agreement", unit="photo", disable=not progress):
            started = time.perf_counter()
            page = app.analyse(photo)
            page_ms = (time.perf_counter() - started) * 1000
            try:
                # without a gate on the page, predict classifies every photo too (force), and
                # its OpenCV gate's verdict is kept for the report
                reference = predictor.predict(photo, force=not gate_on_page).to_dict()
            except MobileDermError as exc:
                reference = {"error": exc.problem}
            rows.append({"photo": str(photo), "agree": compare(page, reference, gate_on_page),
                         "page": _decisions(page), "predict": _decisions(reference),
                         "page_ms": page_ms, "inference_ms": page.get("inference_ms"), "gate_ms": page.get("gate_ms")})
        requests_after_ready = [r["url"] for r in app.requests[requests_at_ready:]]
    summary = _summarise(rows, gate_on_page, opened["load_ms"], requests_after_ready, config)
    document = {**summary, "photos": rows}
    atomic_write_text(out / "web_agreement.json", json.dumps(document, indent=1))
    atomic_write_text(out / "web_agreement.md", markdown(summary, rows))
    return summary


def _summarise(rows: list[dict], gate_on_page: bool, load_ms: float, requests_after_ready: list[str],
               config: dict) -> dict:
    agreement = {}
    for key in COMPARED:
        values = [r["agree"][key] for r in rows if r["agree"].get(key) is not None]
        agreement[key] = ({"agree": sum(values), "n": len(values), "rate": sum(values) / len(values)}
                          if values else None)
    inference = [r["inference_ms"] for r in rows if r["inference_ms"] is not None]
    gate = [r["gate_ms"] for r in rows if r["gate_ms"] is not None]
    per_photo = [r["page_ms"] for r in rows]

    def quantiles(values):
        if not values:
            return None
        ordered = sorted(values)
        return {"median": statistics.median(ordered), "p90": ordered[int(0.9 * (len(ordered) - 1))],
                "n": len(ordered)}

    return {
        "model": config["classifier"]["file"],
        "model_name": f"{config['classifier']['info']['name']} {config['classifier']['info']['version']}",
        "n_photos": len(rows),
        "classified": {"page": sum(bool(r["page"].get("classified")) for r in rows),
                       "predict": sum(bool(r["predict"].get("classified")) for r in rows)},
        "gate_on_page": gate_on_page,
        "errors": {"page": sum(r["page"]["error"] for r in rows), "predict": sum(r["predict"]["error"] for r in rows)},
        "predict_gate": {decision: sum(r["predict"].get("gate") == decision for r in rows)
                         for decision in ("accept", "warn", "reject")},
        "agreement": agreement,
        "benchmark_ms": {"page_load": load_ms, "gate": quantiles(gate), "inference": quantiles(inference),
                         "photo_end_to_end": quantiles(per_photo)},
        "requests_after_load": requests_after_ready,
    }


def markdown(summary: dict, rows: list[dict]) -> str:
    lines = [f"# Web app vs `mobile-derm predict`: {summary['model_name']} ({summary['model']})", "",
             f"{summary['n_photos']} photos; decode errors: page {summary['errors']['page']}, "
             f"predict {summary['errors']['predict']}; classified: page {summary['classified']['page']}, predict "
             f"{summary['classified']['predict']} (a photo neither classifies agrees on the classifier's decisions: "
             "neither names a class). predict's OpenCV gate on them: "
             + ", ".join(f"{k} {v}" for k, v in summary["predict_gate"].items())
             + ("" if summary["gate_on_page"] else " (the page has no gate.tflite: both classified every photo)"),
             "",
             "| decision | agree | compared | rate |", "|---|---|---|---|"]
    for key, value in summary["agreement"].items():
        if value is None:
            reason = "no gate.tflite on the page" if key == "gate" else "nothing to compare"
            lines.append(f"| {key} | | 0 | not measured ({reason}) |")
        else:
            lines.append(f"| {key} | {value['agree']} | {value['n']} | {100 * value['rate']:.1f}% |")
    bench = summary["benchmark_ms"]
    lines += ["", "| browser timing (ms) | median | p90 | n |", "|---|---|---|---|",
              f"| page load (runtime + models) | {bench['page_load']:.0f} | | 1 |"]
    for name, label in (("gate", "gate (its inputs + gate.tflite)"), ("inference", "classifier inference"),
                        ("photo_end_to_end", "one photo, file to result")):
        q = bench[name]
        if q:
            lines.append(f"| {label} | {q['median']:.1f} | {q['p90']:.1f} | {q['n']} |")
    lines += ["", f"Requests after the page was ready: {len(summary['requests_after_load'])}."]
    disagreements = [r for r in rows if any(v is False for v in r["agree"].values())]
    if disagreements:
        lines += ["", "## Disagreements", "", "| photo | page | predict |", "|---|---|---|"]
        for r in disagreements[:50]:
            lines.append(f"| {r['photo']} | `{json.dumps(r['page'])}` | `{json.dumps(r['predict'])}` |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ screenshots

SCREENSHOT_KINDS = ("accepted", "rejected", "unknown")


def screenshots(site: str | Path, photos: dict[str, str | Path], out: str | Path, prefix: str = "web_app") -> dict:
    """A phone-viewport screenshot of the page's result for each photo in ``photos``
    (kind -> photo; kinds: accepted, rejected, unknown), as ``<out>/<prefix>_<kind>.png``.
    Refuses a photo whose result is not of its kind: a screenshot must show what its
    name says."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    with AppPage(site) as app:
        opened = app.open()
        if opened["state"] != "ready":
            raise ConfigError(site, f"the page did not start: {opened['error']}")
        for kind, photo in photos.items():
            result = app.analyse(photo)
            shown = ("rejected" if "error" in result or not result.get("classified")
                     else "unknown" if result["abstained"] else "accepted")
            if shown != kind:
                raise DataError(photo, f"the page's result is {shown}, not {kind}; choose another photo")
            written[kind] = app.screenshot(out / f"{prefix}_{kind}.png")
    return written
