"""Fuzz benchmark: malformed and adversarial files through decode -> gate -> predict.

``mobile-derm fuzz --out DIR [--model M.tflite] [--count 10000] [--seed 0]`` generates
``count`` inputs from a seed (valid photos in every format the decoder reads, 16-bit, CMYK,
palette, alpha, every EXIF orientation and broken EXIF, then truncated, bit-flipped, spliced
and header-lying copies, zero-sized files, random bytes and huge-dimension headers), runs
each in a worker process under a time limit, and writes ``fuzz.json`` and ``fuzz.md``.

Each input ends in exactly one outcome:
  verdict      decoded; the gate judged it (and the classifier ran unless the gate rejected it)
  typed_error  a one-line ImageReadError / MobileDermError naming the input (the contract)
  traceback    any other exception (a bug), or a typed error whose message breaks the contract
  crash        the worker process died (segfault, abort, out of memory)
  hang         no answer within the time limit
and the worker's peak resident memory while handling it (VmHWM, reset per input through
/proc/self/clear_refs) is recorded, so an input that allocates 3 GB is seen even when it
ends in a clean error.
"""
from __future__ import annotations

import io
import json
import multiprocessing as mp
import random
import struct
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mobile_derm.errors import MobileDermError
from mobile_derm.io_utils import atomic_write_text

OUTCOMES = ("verdict", "typed_error", "traceback", "crash", "hang")
DEFAULT_TIME_LIMIT_S = 5.0
DEFAULT_MEMORY_LIMIT_MB = 1024
_ORIENTATIONS = range(1, 9)


# ------------------------------------------------------------------ inputs
def _seed_photos(rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """Small valid files in every format and pixel layout the decoder meets in the wild."""
    from PIL import Image

    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        heif = True
    except ImportError:
        heif = False
    h, w = 48, 64
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    base[12:36, 16:48] = (170, 110, 90)  # a skin-coloured patch, so some inputs reach the classifier
    im = Image.fromarray(base)
    alpha = Image.fromarray(np.dstack([base, rng.integers(0, 255, (h, w), dtype=np.uint8)]), "RGBA")

    def encode(image, fmt, **kw) -> bytes:
        buf = io.BytesIO()
        image.save(buf, fmt, **kw)
        return buf.getvalue()

    seeds = [
        ("jpeg", encode(im, "JPEG", quality=90)),
        ("jpeg_progressive", encode(im, "JPEG", progressive=True)),
        ("jpeg_cmyk", encode(im.convert("CMYK"), "JPEG")),
        ("jpeg_grey", encode(im.convert("L"), "JPEG")),
        ("png", encode(im, "PNG")),
        ("png_palette", encode(im.convert("P"), "PNG")),
        ("png_alpha", encode(alpha, "PNG")),
        ("png_16bit", encode(Image.fromarray(base[:, :, 0].astype(np.uint16) * 257), "PNG")),
        ("gif", encode(im.convert("P"), "GIF")),
        ("gif_animated", encode(im.convert("P"), "GIF", save_all=True,
                                append_images=[Image.fromarray(base[::-1]).convert("P")] * 2)),
        ("tiff", encode(im, "TIFF")),
        ("tiff_16bit", encode(Image.fromarray(base[:, :, 1].astype(np.uint16) * 257), "TIFF")),
        ("tiff_multipage", encode(im, "TIFF", save_all=True, append_images=[im.rotate(90)])),
        ("webp", encode(im, "WEBP")),
        ("webp_alpha", encode(alpha, "WEBP", lossless=True)),
        ("bmp", encode(im, "BMP")),
        ("ico", encode(im, "ICO")),
        ("ppm", encode(im, "PPM")),
    ]
    for orientation in _ORIENTATIONS:
        exif = Image.Exif()
        exif[0x0112] = orientation
        seeds.append((f"jpeg_exif{orientation}", encode(im, "JPEG", exif=exif.tobytes())))
    broken_exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + bytes(rng.integers(0, 255, 40, dtype=np.uint8))
    seeds.append(("jpeg_broken_exif", encode(im, "JPEG", exif=broken_exif)))
    if heif:
        seeds.append(("heic", encode(im, "HEIF")))
    try:
        seeds.append(("avif", encode(im, "AVIF")))
    except (KeyError, OSError):  # a Pillow built without AVIF
        pass
    return seeds


def _huge_headers() -> list[tuple[str, bytes]]:
    """Files whose headers announce absurd sizes (decompression bombs) in each format."""
    w = h = 60000
    png_ihdr = struct.pack(">IIBBBBB", w, h, 16, 6, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + png_ihdr + b"\x00" * 4 + b"\x00" * 64
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 65000, 65000, 1) + b"\x01\x11\x00"
    jpeg = b"\xff\xd8\xff\xe0\x00\x02" + sof + b"\x00" * 64
    gif = b"GIF89a" + struct.pack("<HHBBB", 65000, 65000, 0x80, 0, 0) + b"\x00" * 6 + b"\x2c" + \
        struct.pack("<HHHHB", 0, 0, 65000, 65000, 0) + b"\x02\x02\x44\x01\x00\x3b"
    bmp = b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 50000, 50000, 1, 24, 0, 0, 0, 0, 0, 0)
    entries = [(256, 4, 1, 50000), (257, 4, 1, 50000), (258, 3, 1, 16), (277, 3, 1, 4), (273, 4, 1, 8)]
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)) + \
        b"".join(struct.pack("<HHII", *e) for e in entries) + b"\x00" * 4
    webp = b"RIFF" + struct.pack("<I", 30) + b"WEBPVP8X" + struct.pack("<I", 10) + b"\x10\x00\x00\x00" + \
        (16383).to_bytes(3, "little") + (16383).to_bytes(3, "little")
    return [("huge_png", png), ("huge_jpeg", jpeg), ("huge_gif", gif), ("huge_bmp", bmp), ("huge_tiff", tiff),
            ("huge_webp", webp)]


def _mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random corruption of a valid file."""
    raw = bytearray(data)
    op = rng.choice(("truncate", "flip", "splice", "header", "zero_run", "repeat"))
    if op == "truncate":
        raw = raw[: rng.randrange(0, len(raw))]
    elif op == "flip":
        for _ in range(rng.randint(1, 16)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    elif op == "splice":
        at = rng.randrange(len(raw) + 1)
        raw[at:at] = rng.randbytes(rng.randint(1, 256))
    elif op == "header":  # lie about the fields at the start of the file (sizes, depths, counts)
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(min(len(raw), 64))] = rng.choice((0, 0xFF, rng.randrange(256)))
    elif op == "zero_run":
        at = rng.randrange(len(raw))
        raw[at: at + rng.randint(1, 512)] = bytes(min(len(raw) - at, 512))
    else:  # a chunk repeated many times: long marker runs, nested structures
        at = rng.randrange(len(raw))
        chunk = raw[at: at + rng.randint(1, 32)]
        raw[at:at] = chunk * rng.randint(2, 200)
    return op, bytes(raw)


def generate_inputs(count: int, seed: int = 0):
    """``count`` (name, bytes) pairs, the same for the same seed."""
    rng = random.Random(seed)
    seeds = _seed_photos(np.random.default_rng(seed))
    fixed = seeds + _huge_headers() + [("empty", b""), ("one_byte", b"\xff"), ("text", b"hello, not a photo\n")]
    for i in range(count):
        if i < len(fixed):
            yield fixed[i]
            continue
        kind = rng.random()
        if kind < 0.03:
            yield f"random_{i}", rng.randbytes(rng.randint(1, 4096))
        elif kind < 0.06:
            name, data = rng.choice(seeds)
            yield f"{name}_prefix_{i}", data[: rng.randint(1, 64)]
        else:
            name, data = rng.choice(seeds)
            op, raw = _mutate(data, rng)
            yield f"{name}_{op}_{i}", raw


# ------------------------------------------------------------------ one input, in a worker
@dataclass
class Outcome:
    name: str
    outcome: str
    detail: str
    seconds: float
    peak_rss_mb: float | None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def judge(data: bytes, name: str, predictor=None) -> tuple[str, str]:
    """decode -> gate -> predict for one input: ("verdict", decision) or ("typed_error", message).
    Any other exception propagates: that is the bug the benchmark looks for."""
    from mobile_derm_quality import assess
    from mobile_derm_quality.decode import decode_photo

    try:
        photo = decode_photo(data, name)
        if predictor is None:
            return "verdict", assess(photo.rgb, path=name).decision
        # the app's path (the gate from the model's metadata, then the classifier), with the
        # classifier run on rejected photos too: every decodable input reaches every stage
        prediction = predictor.predict(photo.rgb, force=True)
        return "verdict", f"{prediction.quality['decision']}, {prediction.prediction}"
    except MobileDermError as exc:
        message = str(exc)
        if not message.startswith(f"{name}: ") or "\n" in message or "object at 0x" in message:
            return "traceback", f"typed error breaks the one-line contract: {message!r}"
        return "typed_error", message


def _cap_memory(limit_mb: float) -> None:
    """Cap the worker's address space at what it uses now plus ``limit_mb``, so a runaway
    allocation fails inside the worker (and is reported) instead of swapping the machine."""
    import resource

    try:
        status = Path("/proc/self/status").read_text()
        size_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmSize:"))
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (size_kb * 1024 + int(limit_mb * 2**20), hard))
    except (OSError, ValueError, StopIteration):  # not Linux: measured, not capped
        pass


def _worker(connection, model: str | None, stage, memory_limit_mb: float) -> None:
    import os

    # libjpeg, libpng and OpenCV print their complaints about damaged files straight to file
    # descriptor 2; each input's outcome comes back through the pipe instead
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    predictor = None
    if model:
        from mobile_derm.app.predict import Predictor

        predictor = Predictor(model, num_threads=1)
    judge(b"", "warm-up", None)  # import the decoders before the cap and the first measurement
    _cap_memory(memory_limit_mb)
    connection.send("ready")
    while True:
        item = connection.recv()
        if item is None:
            return
        name, data = item
        measured = _reset_peak_rss()
        start = time.perf_counter()
        try:
            outcome, detail = stage(data, name, predictor)
        except Exception as exc:  # the benchmark's finding, reported, not raised
            outcome, detail = "traceback", f"{type(exc).__name__}: {exc}"[:300]
        connection.send((outcome, detail, time.perf_counter() - start, _peak_rss_mb() if measured else None))


class _Worker:
    """A worker process fed one input at a time; restarted after a crash or a hang."""

    def __init__(self, model, stage, memory_limit_mb: float, start_method: str = "spawn"):
        # "spawn": a clean process, with no threads or TensorFlow state inherited from the caller
        self.context = mp.get_context(start_method)
        self.args = (model, stage, memory_limit_mb)
        self._start()

    def _start(self, startup_limit: float = 120.0):
        self.conn, child = self.context.Pipe()
        self.process = self.context.Process(target=_worker, args=(child, *self.args), daemon=True)
        self.process.start()
        # imports and the model load are not part of any input's time
        if not self.conn.poll(startup_limit) or self.conn.recv() != "ready":
            self.process.kill()
            raise RuntimeError(f"the fuzz worker did not start within {startup_limit:.0f} s")

    def run(self, name: str, data: bytes, time_limit: float) -> Outcome:
        start = time.perf_counter()
        self.conn.send((name, data))
        if self.conn.poll(time_limit):
            try:
                outcome, detail, seconds, rss = self.conn.recv()
                return Outcome(name, outcome, detail, seconds, rss)
            except EOFError:  # the pipe closed: the worker died and is still exiting
                self.process.join(timeout=10)
        alive = self.process.is_alive()
        self.process.kill()
        self.process.join()
        code = self.process.exitcode
        self._start()
        elapsed = time.perf_counter() - start
        if alive:
            return Outcome(name, "hang", f"no answer within {time_limit:.0f} s", elapsed, None)
        return Outcome(name, "crash", f"worker died (exit code {code})", elapsed, None)

    def close(self):
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()


def run_fuzz(count: int = 10_000, seed: int = 0, model: str | Path | None = None,
             time_limit: float = DEFAULT_TIME_LIMIT_S, memory_limit_mb: float = DEFAULT_MEMORY_LIMIT_MB,
             stage=judge, progress: bool = True, inputs=None, start_method: str = "spawn") -> dict:
    """Run ``count`` generated inputs (or the given (name, bytes) pairs) through ``stage``; the summary."""
    from tqdm import tqdm

    items = list(inputs) if inputs is not None else list(generate_inputs(count, seed))
    worker = _Worker(str(model) if model else None, stage, memory_limit_mb, start_method)
    results: list[Outcome] = []
    try:
        for name, data in tqdm(items, desc="fuzz", unit="input", disable=not progress):
            results.append(worker.run(name, data, time_limit))
    finally:
        worker.close()
    return summarise(results, time_limit, memory_limit_mb, seed, model)


def summarise(results: list[Outcome], time_limit: float, memory_limit_mb: float, seed: int, model) -> dict:
    counts = Counter(r.outcome for r in results)
    slow = [r for r in results if r.seconds > time_limit and r.outcome != "hang"]
    heavy = [r for r in results if r.peak_rss_mb is not None and r.peak_rss_mb > memory_limit_mb]
    failures = [r for r in results if r.outcome in ("traceback", "crash", "hang") or r in slow or r in heavy]
    kinds = Counter(r.name.split("_")[0] for r in results)
    rss = [r.peak_rss_mb for r in results if r.peak_rss_mb is not None]
    # with a model, a verdict's detail is "<gate decision>, <prediction>": how many reached the classifier
    classified = sum(r.outcome == "verdict" and ", " in r.detail for r in results)
    return {
        "inputs": len(results),
        "seed": seed,
        "model": str(model) if model else None,
        "time_limit_s": time_limit,
        "memory_limit_mb": memory_limit_mb,
        "outcomes": {k: counts.get(k, 0) for k in OUTCOMES},
        "classified": classified,
        "over_time_limit": len(slow),
        "over_memory_limit": len(heavy),
        "max_seconds": round(max((r.seconds for r in results), default=0.0), 3),
        "max_peak_rss_mb": round(max(rss), 1) if rss else None,
        "inputs_by_kind": dict(sorted(kinds.items())),
        "passed": not failures,
        "failures": [asdict(r) for r in failures[:200]],
    }


def markdown(summary: dict) -> str:
    lines = [f"# Fuzz benchmark: {summary['inputs']} inputs (seed {summary['seed']}, model "
             f"{summary['model'] or 'none: decode and gate only'}; {summary['classified']} classified)", "",
             "| outcome | inputs |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary["outcomes"].items()]
    verdict = ("PASSED: every input got a verdict or a one-line typed error within the limits." if summary["passed"]
               else "FAILED: the inputs below broke the contract or the limits.")
    lines += [f"| over {summary['time_limit_s']:.0f} s | {summary['over_time_limit']} |",
              f"| over {summary['memory_limit_mb']:.0f} MiB peak RSS | {summary['over_memory_limit']} |", "",
              f"Slowest input: {summary['max_seconds']} s; highest peak RSS: {summary['max_peak_rss_mb']} MiB. {verdict}"]
    if summary["failures"]:
        lines += ["", "| input | outcome | detail |", "|---|---|---|"]
        lines += [f"| {f['name']} | {f['outcome']} | {f['detail'][:120]} |" for f in summary["failures"][:50]]
    return "\n".join(lines) + "\n"


def write_report(summary: dict, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    atomic_write_text(out / "fuzz.json", json.dumps(summary, indent=2))
    atomic_write_text(out / "fuzz.md", markdown(summary))
    return out / "fuzz.json"
