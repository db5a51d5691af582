"""The reference on-device web app: ``mobile-derm web-app`` writes it, ``mobile-derm serve`` serves it.

The page's source is ``mobile_derm/app/web/`` (HTML, CSS and ES modules, no build step);
its runtime is LiteRT.js (``@litertjs/core``, pinned in that folder's package.json and
installed there by ``npm ci``). ``write_site`` copies the page, the runtime's JS and Wasm
files, and the chosen model file into one folder, and writes ``app_config.json``: what
the page knows about the model, read here from the file's own metadata (labels, display
names, thresholds, operating points, abstention rules, treatments, normalisation, input
size, the input and output tensors' types and quantization). The page source holds
nothing about any particular model.

No TensorFlow: the model is read with ``mobile_derm.app.model_file`` and LiteRT.
"""
from __future__ import annotations

import functools
import html
import http.server
import inspect
import json
import shutil
import threading
from pathlib import Path

from mobile_derm.errors import ConfigError, DataError, ModelFileError

WEB_SOURCE = Path(__file__).resolve().parent / "app" / "web"
PAGE_FILES = ("index.html", "style.css", "app.js", "gate.js", "pipeline.js", "runtime.js")
CONFIG_FILENAME = "app_config.json"
DEFAULT_VARIANT = "int8"
MODEL_CARD_PAGE = "model_card.html"
WASM_DIR = "vendor/litertjs-core/wasm/"
# site path -> path under the web source's node_modules; loadLiteRt picks the relaxed-SIMD
# build or the compatible one (no threads: they need cross-origin isolation headers)
RUNTIME_FILES = {
    "vendor/litertjs-core/index.js": "@litertjs/core/dist/index.js",
    "vendor/litertjs-wasm-utils/index.js": "@litertjs/wasm-utils/dist/index.js",
    **{WASM_DIR + name: "@litertjs/core/wasm/" + name
       for name in ("litert_wasm_internal.js", "litert_wasm_internal.wasm",
                    "litert_wasm_compat_internal.js", "litert_wasm_compat_internal.wasm")},
}
# LiteRT.js 2.5 tensors: float32, int32 and uint8 (no int8)
WEB_INPUT_TYPES = ("float32", "uint8")


def _default_top_k() -> int:
    """``mobile-derm predict``'s top-k, so the page lists as many classes."""
    from mobile_derm.app.predict import Predictor

    return inspect.signature(Predictor.predict).parameters["top_k"].default


def _notice() -> str:
    """The decision-support notice shown on every result: the model card's, as plain text."""
    from mobile_derm.evaluation.model_card import NOT_A_MEDICAL_DEVICE

    return NOT_A_MEDICAL_DEVICE.replace("**", "")


def _tensor(detail: dict, name: str) -> dict:
    import numpy as np

    scale, zero_point = detail["quantization"]
    return {"name": name, "dtype": np.dtype(detail["dtype"]).name, "shape": [int(n) for n in detail["shape"]],
            "scale": float(scale), "zero_point": int(zero_point)}


def classifier_tensors(path: Path, info) -> dict:
    """The input and the outputs of the classifier file as the page addresses them, by the
    names LiteRT.js reports (the signature's names when the file has a signature, as Keras
    models converted directly do; else the tensors' own names), with each tensor's type and
    quantization. The roles follow ``mobile_derm.app.predict``: the interpreter's first
    output is the probabilities, the second (if the metadata names it) the unfamiliarity."""
    from ai_edge_litert.interpreter import Interpreter

    from mobile_derm_quality.quiet import native_output_silenced

    try:
        with native_output_silenced():
            interpreter = Interpreter(model_path=str(path))
    except (ValueError, RuntimeError) as exc:
        raise ModelFileError(path, f"LiteRT cannot load it ({str(exc).splitlines()[0]})") from None
    [input_detail] = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    names = {d["index"]: d["name"] for d in [input_detail, *outputs]}
    if interpreter.get_signature_list():
        runner = interpreter.get_signature_runner()
        for group in (runner.get_input_details(), runner.get_output_details()):
            names.update({d["index"]: name for name, d in group.items()})
    tensors = {"input": _tensor(input_detail, names[input_detail["index"]]), "outputs": {}}
    if tensors["input"]["dtype"] not in WEB_INPUT_TYPES:
        raise ModelFileError(path, f"its input is {tensors['input']['dtype']}; LiteRT.js takes "
                                   f"{' or '.join(WEB_INPUT_TYPES)} inputs (export with --io-type uint8, or use "
                                   "the float32 file)")
    roles = ["probabilities"] + (["unfamiliarity"] if len(outputs) > 1 and info.familiarity else [])
    for role, detail in zip(roles, outputs):
        tensors["outputs"][role] = _tensor(detail, names[detail["index"]])
    tensors["outputs"].setdefault("unfamiliarity", None)
    return tensors


def _decode_limits() -> dict:
    """The photo limits and transparency rule of ``mobile_derm_quality.decode``, which the
    page applies before and after the browser's decoder."""
    from mobile_derm_quality import decode

    return {"max_pixels": decode.DEFAULT_MAX_PIXELS, "min_long_side": decode.DEFAULT_MIN_LONG_SIDE,
            "max_file_bytes": decode.MAX_FILE_BYTES, "transparency_background": decode.TRANSPARENCY_BACKGROUND}


def app_config(model_path: Path) -> dict:
    """What the page needs about the model in ``model_path`` and the gate twin beside it,
    from their metadata only."""
    from mobile_derm.app.model_file import read_model_info

    info = read_model_info(model_path)
    return {
        "notice": _notice(),
        "top_k": _default_top_k(),
        "decode": _decode_limits(),
        "runtime": {"wasm_dir": WASM_DIR},
        "classifier": {"file": model_path.name, "info": info.to_dict(), "tensors": classifier_tensors(model_path, info),
                       "model_card": None},
        "gate": gate_description(model_path.parent, info),
    }


def gate_description(models: Path, info) -> dict | None:
    """The page's gate: the gate's TFLite twin beside the classifier (``mobile_derm_quality.gate_twin``;
    the file the classifier's packed gate config names, else ``gate.tflite`` if there) with its
    packed contract, or None when there is none. Refused when the config names a file that is
    missing, or the twin was built from another gate config than the classifier's own (the
    one ``predict`` gates with): the page would judge photos differently."""
    from mobile_derm_quality import GateConfig
    from mobile_derm_quality.gate_twin import (CONFIG_POINTER_KEY, MIN_ANALYSIS_SIDE, MODEL_FILENAME, SIGNATURE,
                                               read_twin_metadata)

    own = dict(info.gate_config or GateConfig.default().to_dict())
    named = own.pop(CONFIG_POINTER_KEY, None)  # the classifier's config, less the pointer to the twin
    path = models / (named or MODEL_FILENAME)
    if not path.is_file():
        if named:
            raise DataError(path, "the classifier's metadata names this gate model, but it is not in the folder")
        return None
    contract = read_twin_metadata(path)
    if GateConfig.from_dict(own).to_dict() != GateConfig.from_dict(contract["config"]).to_dict():
        raise ConfigError(path, f"was built from another gate config than the one packed in the classifier; rebuild "
                                f"it with: mobile-derm export-gate --out {models} --gate-config <the classifier's>")
    return {"file": path.name, "signature": SIGNATURE, "contract": {**contract, "min_analysis_side": MIN_ANALYSIS_SIDE}}


def _runtime_sources() -> dict[str, Path]:
    modules = WEB_SOURCE / "node_modules"
    sources = {site: modules / rel for site, rel in RUNTIME_FILES.items()}
    missing = [str(p) for p in sources.values() if not p.is_file()]
    if missing:
        raise DataError(modules, f"the web app's runtime is not installed (missing {missing[0]}); run "
                                 f"'npm ci' in {WEB_SOURCE} (make test does)")
    return sources


def choose_model(models: Path, variant: str) -> Path:
    if not models.is_dir():
        raise DataError(models, "not a folder of exported models" if models.exists() else "folder not found")
    path = models / f"{variant}.tflite"
    if not path.is_file():
        found = sorted(p.name for p in models.glob("*.tflite"))
        raise DataError(models, f"no {path.name} here (found: {', '.join(found) or 'no .tflite files'}); "
                                f"export one, or pick another with --variant")
    return path


def _model_card_page(model_path: Path) -> str | None:
    from mobile_derm.app.model_file import read_model_card

    try:
        text = read_model_card(model_path)
    except ModelFileError:
        return None  # exported before model cards were packed
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Model card</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:1rem;color:#1a1a1a}"
            "pre{white-space:pre-wrap;font-family:inherit}</style></head>"
            f"<body><p><a href=\"index.html\">Back to the app</a></p><pre>{html.escape(text)}</pre></body></html>\n")


def write_site(models: str | Path, out: str | Path, variant: str = DEFAULT_VARIANT) -> Path:
    """Write the static site for ``<models>/<variant>.tflite`` into ``out`` (created, or
    replaced if it holds an earlier site) and return ``out``. The folder appears complete
    or not at all."""
    models, out = Path(models), Path(out)
    model_path = choose_model(models, variant)
    runtime = _runtime_sources()
    config = app_config(model_path)
    if out.exists() and not (out / CONFIG_FILENAME).is_file():
        if not out.is_dir() or any(out.iterdir()):
            raise ConfigError(out, "exists and is not an earlier web-app site; give a new or empty folder")
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for name in PAGE_FILES:
            shutil.copyfile(WEB_SOURCE / name, staging / name)
        for site_path, source in runtime.items():
            (staging / site_path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, staging / site_path)
        shutil.copyfile(model_path, staging / model_path.name)
        if config["gate"] is not None:
            shutil.copyfile(models / config["gate"]["file"], staging / config["gate"]["file"])
        card = _model_card_page(model_path)
        if card is not None:
            (staging / MODEL_CARD_PAGE).write_text(card, encoding="utf-8")
            config["classifier"]["model_card"] = MODEL_CARD_PAGE
        (staging / CONFIG_FILENAME).write_text(json.dumps(config, indent=1), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


# ------------------------------------------------------------------ serving

class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with the types the page needs (.wasm, .js modules); quiet."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript", ".json": "application/json",
                      ".tflite": "application/octet-stream"}

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


class SiteServer:
    """A localhost server for one site folder, in a background thread:
    ``with SiteServer(site) as url: ...``."""

    def __init__(self, site: str | Path, port: int = 0, host: str = "127.0.0.1"):
        self.site = Path(site)
        if not (self.site / "index.html").is_file():
            raise DataError(self.site, "not a web-app site (no index.html); write one with mobile-derm web-app")
        handler = functools.partial(_Handler, directory=str(self.site))
        try:
            self.httpd = http.server.ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(None, f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
        self.url = f"http://{host}:{self.httpd.server_port}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        return self.url

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def serve_forever(self) -> None:
        try:
            self.httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.httpd.server_close()
