"""gate-parity: the OpenCV gate (the reference) and its TFLite twin on the same photos.

Each photo is judged by both engines; the report gives the verdict agreement, the
agreement on each reason code (is it in the verdict's list or not), each measurement's
and each score's error, and lists every disagreement with both engines' scores, so it
can be told whether a score sat on its threshold (borderline) or the twin is wrong.

Photos: the clean photos of the shared sets (``../shared/data``: PAD-UFES-20, SD-198,
Derm7pt, the HAM10000 thumbnails and the non-skin photos), each also degraded in a share of
every controlled degradation (``degrade.DEGRADATIONS``, every severity) and every
phone-capture category (``phone_capture``, both splits and both labels), cycling so that
every variant is used about equally often; or, with ``synthetic``, the package's generated
lesion photos (no data needed: the CI test).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from tqdm import tqdm

from mobile_derm_quality import degrade, phone_capture
from mobile_derm_quality.config import CHECK_NAMES, GateConfig
from mobile_derm_quality.errors import ImageReadError
from mobile_derm_quality.features import Measurements
from mobile_derm_quality.gate import measure_for, raw_values, read_photo_for, verdict_from_measurements
from mobile_derm_quality.gate_twin import DERIVED_NAMES, MEASUREMENT_NAMES, REASON_CODES, GateTwin, twin_inputs
from mobile_derm_quality.photo_sets import CLEAN_SETS, LOWRES_SET, OOD_SET, read_rows

BORDERLINE = 0.01  # a score this close to its threshold (or threshold + warn margin) is borderline
PARITY_JSON = "gate_parity.json"
PARITY_MD = "gate_parity.md"


def variants() -> list[tuple[str, object]]:
    """Every (category, severity) a photo can be given: clean, each controlled degradation at
    each severity, each phone-capture category x split x label."""
    out: list[tuple[str, object]] = [("clean", None)]
    out += [(name, level) for name, spec in degrade.DEGRADATIONS.items() for level in spec["levels"]]
    out += [(f"phone_{cat}", f"{split}/{label}") for cat in phone_capture.CATEGORIES
            for split in phone_capture.SPLITS for label in phone_capture.LABELS]
    return out


def apply_variant(rgb: np.ndarray, category: str, severity, seed) -> np.ndarray:
    if category == "clean":
        return rgb
    if category.startswith("phone_"):
        split, label = str(severity).split("/")
        rng = np.random.default_rng(seed)
        return phone_capture.sample(rgb, category[len("phone_"):], split, rng, label=label)[0]
    return degrade.apply(rgb, category, severity, seed=int(np.random.default_rng(seed).integers(2**31)))


def photo_variants(photos, per_photo: int, seed: int) -> Iterator[tuple[str, str, object, np.ndarray]]:
    """(photo name, category, severity, image): each photo clean, plus ``per_photo`` variants
    taken in turn from ``variants()`` (so all of them recur evenly over the photos)."""
    kinds = variants()[1:]
    turn = 0
    for index, (name, rgb) in enumerate(photos):
        yield name, "clean", None, rgb
        for _ in range(per_photo):
            category, severity = kinds[turn % len(kinds)]
            turn += 1
            yield name, category, severity, apply_variant(rgb, category, severity, [seed, index, turn])


def shared_photos(root: Path, per_set: int, seed: int, unreadable: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    """Up to ``per_set`` photos of each shared set (a seeded random choice), decoded as the gate decodes."""
    config = GateConfig.default()
    for set_index, ds in enumerate(CLEAN_SETS + (LOWRES_SET, OOD_SET)):
        folder = root / ds
        if not folder.is_dir():
            continue
        rows = read_rows(folder)
        order = np.random.default_rng([seed, set_index]).permutation(len(rows))[:per_set]
        for i in order:
            try:
                rgb = read_photo_for(folder / rows[i]["image"], config).rgb
            except ImageReadError as exc:
                unreadable.append(str(exc))
                continue
            yield f"{ds}/{rows[i]['image']}", rgb


def synthetic_photos(n: int, seed: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """``n`` generated lesion photos (mobile_derm.datasets.synthetic) at sizes from a thumbnail
    to a large photo, square and not, plus the odd cases (a grey photo, a plain wall, a
    near-black frame, a tiny thumbnail)."""
    from mobile_derm.datasets.synthetic import DEMO_CLASSES, render_lesion_views

    rng = np.random.default_rng(seed)
    sizes = [(300, 300), (480, 360), (360, 640), (900, 1200), (240, 180), (700, 700), (1500, 1000), (100, 140)]
    for i in range(n):
        label = DEMO_CLASSES[i % len(DEMO_CLASSES)]
        h, w = sizes[i % len(sizes)]
        bgr = render_lesion_views(label, i, 1, max(h, w) // 2, seed=seed)[0]
        rgb = cv2.resize(np.ascontiguousarray(bgr[..., ::-1]), (w, h), interpolation=cv2.INTER_LINEAR)
        yield f"synthetic/{label}_{i}_{w}x{h}", rgb
    yield "synthetic/grey", np.repeat(cv2.GaussianBlur(rng.integers(0, 255, (400, 500, 1), np.uint8), (0, 0), 3)[..., None], 3, axis=2)
    yield "synthetic/wall", np.full((480, 640, 3), (182, 176, 168), np.uint8)
    yield "synthetic/dark", rng.integers(0, 12, (500, 400, 3), np.uint8)
    yield "synthetic/thumbnail", rng.integers(90, 200, (12, 9, 3), np.uint8)


def _reason_flags(reasons) -> np.ndarray:
    return np.array([code in reasons for code in REASON_CODES])


def compare(twin: GateTwin, items, progress: bool = True, total: int | None = None) -> dict:
    """Both engines on every (name, category, severity, image) of ``items``: the parity report."""
    config = twin.config
    mmi = config.min_model_input
    rows = []
    for name, category, severity, rgb in tqdm(items, desc="gate-parity", unit="img", total=total, disable=not progress):
        m = measure_for(rgb, config)
        ref = verdict_from_measurements(m, config, mmi)
        out = twin.run(twin_inputs(rgb, config.analysis_size, mmi))
        got = twin.verdict(out, mmi)
        ref_values = _measurement_values(m, config, mmi)
        rows.append({"photo": name, "category": category, "severity": severity, "ref": ref, "twin": got,
                     "ref_values": ref_values, "twin_values": out["measurements"].astype(np.float64)})
    return report(rows, config)


def _measurement_values(m: Measurements, config: GateConfig, mmi: int) -> np.ndarray:
    # the derived values, from whichever check's raw values hold them
    extra = {k: v for raws in raw_values(m, config, mmi).values() for k, v in raws.items() if k in DERIVED_NAMES}
    return np.array([float(extra[k]) if k in extra else float(getattr(m, k)) for k in MEASUREMENT_NAMES])


def _margin(check, config: GateConfig) -> float:
    """How close a check's score is to flipping its pass/warn state."""
    thr = float(config.thresholds.get(check.name, 0.5))
    return min(abs(check.score - thr), abs(check.score - thr - float(config.warn_margin.get(check.name, 0.0))))


def report(rows: list[dict], config: GateConfig) -> dict:
    n = len(rows)
    same_decision = np.array([r["ref"].decision == r["twin"].decision for r in rows])
    flags_ref = np.array([_reason_flags(r["ref"].reasons) for r in rows]).reshape(n, len(REASON_CODES))
    flags_twin = np.array([_reason_flags(r["twin"].reasons) for r in rows]).reshape(n, len(REASON_CODES))
    reason_agree = {code: float(np.mean(flags_ref[:, i] == flags_twin[:, i])) for i, code in enumerate(REASON_CODES)}
    ref_values = np.array([r["ref_values"] for r in rows])
    twin_values = np.array([r["twin_values"] for r in rows])
    err = np.abs(ref_values - twin_values)
    scores_ref = np.array([[c.score for c in r["ref"].checks] for r in rows])
    scores_twin = np.array([[c.score for c in r["twin"].checks] for r in rows])
    score_err = np.abs(scores_ref - scores_twin)
    confusion: dict = {}
    for r in rows:
        cell = confusion.setdefault(r["ref"].decision, {})
        cell[r["twin"].decision] = cell.get(r["twin"].decision, 0) + 1
    by_category: dict = {}
    for r, same in zip(rows, same_decision):
        cat = by_category.setdefault(r["category"], {"n": 0, "agree": 0})
        cat["n"] += 1
        cat["agree"] += int(same)
    disagreements = []
    for r, same, fr, ft in zip(rows, same_decision, flags_ref, flags_twin):
        if same and np.array_equal(fr, ft):
            continue
        differing = [a.name for a, b in zip(r["ref"].checks, r["twin"].checks)
                     if (a.passed, a.warn, a.applicable) != (b.passed, b.warn, b.applicable) or a.reason != b.reason]
        margins = {name: round(_margin(r["ref"].check(name), config), 4) for name in differing}
        disagreements.append({
            "photo": r["photo"], "category": r["category"], "severity": r["severity"],
            "opencv": {"decision": r["ref"].decision, "reasons": r["ref"].reasons},
            "tflite": {"decision": r["twin"].decision, "reasons": r["twin"].reasons},
            "checks": {name: {"opencv": round(r["ref"].check(name).score, 5), "tflite": round(r["twin"].check(name).score, 5),
                              "threshold": float(config.thresholds.get(name, 0.5))} for name in differing},
            "borderline": bool(differing) and all(m <= BORDERLINE for m in margins.values()),
            "distance_to_threshold": margins,
        })
    return {
        "n": n,
        "config_version": config.version,
        "verdict_agreement": round(float(same_decision.mean()), 5) if n else None,
        "all_reasons_agree": round(float(np.mean(np.all(flags_ref == flags_twin, axis=1))), 5) if n else None,
        "reason_agreement": {k: round(v, 5) for k, v in reason_agree.items()},
        "reason_agreement_min": round(min(reason_agree.values()), 5) if n else None,
        "decisions": confusion,
        "by_category": {k: {"n": v["n"], "verdict_agreement": round(v["agree"] / v["n"], 4)} for k, v in sorted(by_category.items())},
        "measurement_error": {k: _error_summary(err[:, i]) for i, k in enumerate(MEASUREMENT_NAMES)},
        "score_error": {k: _error_summary(score_err[:, i]) for i, k in enumerate(CHECK_NAMES)},
        "disagreements": disagreements,
    }


def _error_summary(e: np.ndarray) -> dict:
    if e.size == 0:
        return {}
    return {"max": float(f"{e.max():.3g}"), "p99": float(f"{np.percentile(e, 99):.3g}"), "mean": float(f"{e.mean():.3g}")}


def render_markdown(rep: dict) -> str:
    lines = [f"# Gate parity: OpenCV gate vs gate.tflite ({rep['n']} photos)", "",
             f"- verdict agreement: **{rep['verdict_agreement']}**",
             f"- per-reason agreement, lowest: **{rep['reason_agreement_min']}**; every reason the same: {rep['all_reasons_agree']}",
             f"- source: {rep.get('source', '')}", f"- gate model: {rep.get('gate_model', '')}",
             f"- timing (ms, medians): {rep.get('timing', {})}", "",
             "| reason | agreement |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rep["reason_agreement"].items()]
    lines += ["", "| measurement | max abs error | p99 | mean |", "|---|---|---|---|"]
    lines += [f"| {k} | {v.get('max')} | {v.get('p99')} | {v.get('mean')} |" for k, v in rep["measurement_error"].items()]
    lines += ["", "| check score | max abs error | p99 | mean |", "|---|---|---|---|"]
    lines += [f"| {k} | {v.get('max')} | {v.get('p99')} | {v.get('mean')} |" for k, v in rep["score_error"].items()]
    lines += ["", "| category | n | verdict agreement |", "|---|---|---|"]
    lines += [f"| {k} | {v['n']} | {v['verdict_agreement']} |" for k, v in rep["by_category"].items()]
    lines += ["", f"## Disagreements ({len(rep['disagreements'])})", ""]
    if rep["disagreements"]:
        lines += ["| photo | variant | opencv | tflite | checks (opencv / tflite score, threshold) | borderline |",
                  "|---|---|---|---|---|---|"]
        for d in rep["disagreements"]:
            checks = "; ".join(f"{k} {v['opencv']} / {v['tflite']} ({v['threshold']})" for k, v in d["checks"].items())
            lines.append(f"| {d['photo']} | {d['category']} {d['severity'] or ''} | {d['opencv']['decision']} "
                         f"{','.join(d['opencv']['reasons'])} | {d['tflite']['decision']} {','.join(d['tflite']['reasons'])} "
                         f"| {checks} | {'yes' if d['borderline'] else 'no'} |")
    return "\n".join(lines) + "\n"


def timing(twin: GateTwin, size: tuple[int, int] = (3000, 4000), repeats: int = 200) -> dict:
    """Medians (ms, this process's LiteRT threads) of the twin on its inputs, of making the inputs
    from a decoded ``size`` photo (OpenCV: what an app does before it runs the twin), and of
    the OpenCV gate on the same photo; the file's size."""
    from mobile_derm_quality.gate import assess

    rgb = cv2.resize(next(iter(synthetic_photos(1)))[1], (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    config = twin.config

    def median_ms(fn, n):
        fn()
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return round(float(np.median(times)) * 1e3, 2)

    inputs = twin_inputs(rgb, config.analysis_size, config.min_model_input)
    return {"photo": f"{size[1]}x{size[0]}", "repeats": repeats,
            "twin_ms": median_ms(lambda: twin.run(inputs), repeats),
            "inputs_ms": median_ms(lambda: twin_inputs(rgb, config.analysis_size, config.min_model_input), max(20, repeats // 5)),
            "opencv_gate_ms": median_ms(lambda: assess(rgb, config), max(20, repeats // 5)),
            "file_bytes": twin.path.stat().st_size}


def gate_parity(twin: GateTwin, out_dir: str | Path, data_root: str | Path | None = None, per_set: int = 60,
                per_photo: int = 8, synthetic: int = 0, seed: int = 0, progress: bool = True) -> dict:
    """Run both engines on the shared sets (or ``synthetic`` generated photos) and write
    gate_parity.json and gate_parity.md into ``out_dir``. Returns the report."""
    from mobile_derm_quality.files import atomic_write_text
    from mobile_derm_quality.photo_sets import default_data_root

    unreadable: list[str] = []
    if synthetic:
        photos = list(synthetic_photos(synthetic, seed))
        source = f"{len(photos)} generated photos (mobile_derm.datasets.synthetic and odd cases)"
    else:
        root = Path(data_root) if data_root else default_data_root()
        if not root.is_dir():
            from mobile_derm_quality.errors import QualityCheckError

            raise QualityCheckError(root, "data folder not found (give --data-root, or --synthetic N)")
        photos = list(shared_photos(root, per_set, seed, unreadable))
        source = f"{len(photos)} photos of {root} ({per_set} per set at most)"
    start = time.perf_counter()
    rep = compare(twin, photo_variants(photos, per_photo, seed), progress, total=len(photos) * (1 + per_photo))
    rep.update({"source": source, "per_photo_variants": per_photo, "seed": seed, "gate_model": str(twin.path),
                "unreadable": unreadable, "seconds": round(time.perf_counter() - start, 1),
                "timing": timing(twin, repeats=100)})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / PARITY_JSON, json.dumps(rep, indent=2) + "\n")
    atomic_write_text(out / PARITY_MD, render_markdown(rep))
    return rep
