"""Subcommands of ``mobile-derm`` for the quality gate: check-photo, calibrate-gate, gate-eval.

The main CLI calls ``register(subparsers)`` and then ``args.func(args)``. This module can also
run on its own: ``python -m mobile_derm_quality.cli check-photo IMAGE``.

The gate never imports the classifier: ``gate-eval`` here evaluates the gate alone, and
``mobile-derm gate-eval --model FILE.tflite`` (mobile_derm's CLI) adds the classifier by
passing it to ``cmd_gate_eval(args, predictor=...)``.

Exit codes, the same for every ``mobile-derm`` command (``EXIT_CODES``): 0 done; 2 an input
or option could not be used (one ``error: <file>: <problem>`` line on stderr for each); 3
(``check-photo``, ``predict``) every input was read and at least one photo was rejected by
the quality gate.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mobile_derm_quality.errors import MobileDermError
from mobile_derm_quality.quiet import set_verbose

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_REJECTED = 3
GATE_ENGINES = ("opencv", "tflite")  # the reference gate, and its TFLite twin gate.tflite on LiteRT (gate_twin)
EXIT_CODES = ("exit status: 0 done; 2 an input or option could not be used (one 'error: <file>: <problem>' line "
              "each on stderr); 3 (check-photo, predict) a photo was rejected by the quality gate")


# ------------------------------------------------------------------ option types
def number_type(convert, minimum, strict: bool, what: str):
    """An argparse type: ``convert`` the text and require it >= (or >, ``strict``) ``minimum``."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = number_type(int, 1, False, "a whole number >= 1")
whole_number = number_type(int, 0, False, "a whole number >= 0")
positive_float = number_type(float, 0.0, True, "a number > 0")


def fraction(text: str) -> float:
    """A number in (0, 1]."""
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in (0, 1]")
    return value


def verbose_option() -> argparse.ArgumentParser:
    """``--verbose``, for every subcommand's parser (``parents=[...]``)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="also show the native libraries' log lines (TensorFlow, LiteRT, OpenCV)")
    return parent


def run(args) -> int:
    """Run a parsed command under the error contract: typed errors and OS errors become one
    ``error: <file>: <problem>`` line and exit status 2."""
    set_verbose(getattr(args, "verbose", False))
    try:
        return args.func(args)
    except MobileDermError as exc:
        return _err(exc)
    except OSError as exc:  # a folder where a file was asked for, a full disk, no permission...
        return _err(MobileDermError(exc.filename, exc.strerror or type(exc).__name__))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _load_config(path):
    from mobile_derm_quality.config import GateConfig

    return GateConfig.load(path) if path else GateConfig.default()


def _err(exc: MobileDermError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return EXIT_ERROR


def _photo_checker(args):
    """check_photo of the engine ``args`` chose: the OpenCV gate, or gate.tflite (whose config is inside it)."""
    if args.engine == "tflite":
        from mobile_derm_quality.gate_twin import GateTwin

        if not args.gate_model:
            raise MobileDermError(None, "--engine tflite needs --gate-model gate.tflite (make one with mobile-derm export-gate)")
        if args.config:
            raise MobileDermError(args.config, "--config is for --engine opencv; gate.tflite carries its own config")
        twin = GateTwin(args.gate_model)
        return lambda image: twin.check_photo(image, min_model_input=args.min_model_input)
    from mobile_derm_quality.gate import check_photo

    config = _load_config(args.config)
    return lambda image: check_photo(image, config, min_model_input=args.min_model_input)


def cmd_check_photo(args) -> int:
    check_photo = _photo_checker(args)
    results, any_rejected, any_error = [], False, False
    for image in args.images:
        try:
            v = check_photo(image)
        except MobileDermError as exc:
            any_error = True
            if args.json:
                results.append({"path": str(image), "error": exc.problem})
            print(f"error: {exc}", file=sys.stderr)
            continue
        any_rejected |= v.decision == "reject"
        if args.json:
            results.append(v.to_dict())
            continue
        print(f"{image}: {v.decision.upper()}")
        for c in v.checks:
            flag = "ok  " if c.passed and not c.warn else ("warn" if c.passed else ("n/a " if not c.applicable else "FAIL"))
            reason = f"  {c.reason}" if c.reason and flag != "ok  " else ""
            print(f"  {flag} {c.name:<12} {c.score:5.2f} (>= {c.threshold:.2f}){reason}")
        for g in v.guidance:
            print(f"  -> {g}")
    if args.json:  # a list, for one photo as for many
        print(json.dumps(results, indent=2))
    if any_error:
        return EXIT_ERROR
    return EXIT_REJECTED if any_rejected else EXIT_OK


def cmd_calibrate_gate(args) -> int:
    from mobile_derm_quality.calibrate import calibrate

    if Path(args.out).is_dir():
        raise MobileDermError(args.out, "is a folder; --out is the config file to write (for example gate.json)")
    base = _load_config(args.config)
    cfg = calibrate(args.folder, target_pass_rate=args.target_pass_rate, base=base, progress=not args.quiet,
                    fit_skin_model=args.fit_skin_model)
    cfg.save(args.out)
    cal = cfg.calibration or {}
    print(
        f"wrote {args.out}: version {cfg.version}, {cal.get('n_images')} photos, "
        f"pass rate {cal.get('achieved_pass_rate')} (target {args.target_pass_rate})"
    )
    for k, v in sorted(cfg.thresholds.items()):
        print(f"  {k:<12} {v:.3f}")
    return EXIT_OK


def cmd_gate_eval(args, predictor=None) -> int:
    """``predictor``: a classifier to score on the gate's photos as well (what gate_eval's
    ``predictor`` asks of it), handed in by a caller that has one."""
    from mobile_derm_quality.gate_eval import gate_eval

    rep = gate_eval(
        data_root=args.data_root,
        out_dir=args.out,
        config=_load_config(args.config),
        predictor=predictor,
        limit=args.limit,
        degrade_per_set=args.degrade_per_set,
        seed=args.seed,
        progress=not args.quiet,
        plots=not args.no_plots,
        phone_capture_per_set=args.phone_capture,
    )
    print(f"wrote {Path(args.out) / 'gate_eval.json'}")
    print(f"clean_pass_rate (report half) {rep['clean_pass_rate']}  " + "  ".join(f"{k} {v['pass_rate']}" for k, v in rep["clean"].items())
          + f"  (fit half {rep['clean_pass_rate_fit_half']})")
    print("auc " + "  ".join(f"{k} {v['auc']}" for k, v in rep["degradations"].items()))
    print(f"ood_reject_rate {rep['ood_reject_rate']}  nonskin_free_reject_rate {rep['nonskin_free_reject_rate']}  "
          f"ms_per_image {rep['ms_per_image']}")
    if rep.get("phone_capture"):
        for split, cats in rep["phone_capture"]["by_split"].items():
            print(f"phone-capture {split}: retake rejected (flagged) / acceptable passed, all sources: " + "  ".join(
                f"{k} {v['all']['retake']['rejected']} ({v['all']['retake']['flagged']}) / {v['all']['acceptable']['passed']}"
                for k, v in cats.items()))
    if rep.get("classifier"):
        print(f"classifier accuracy {rep['classifier']['accuracy']}")
    return EXIT_OK


def register(subparsers, parents=()) -> dict[str, argparse.ArgumentParser]:
    """Add check-photo, calibrate-gate and gate-eval; returns their parsers by name
    (so a caller can add options, as mobile-derm adds gate-eval's --model)."""
    parsers = {}
    parsers["check-photo"] = p = subparsers.add_parser(
        "check-photo", parents=parents, help="judge photo quality: accept / warn / reject with guidance",
        epilog=EXIT_CODES)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--config", help="gate config JSON (default: built-in)")
    p.add_argument("--json", action="store_true", help="print JSON: a list with one entry per photo")
    p.add_argument("--min-model-input", type=positive_int, default=None,
                   help="model input size in pixels (default: from config)")
    p.add_argument("--engine", choices=GATE_ENGINES, default="opencv",
                   help="opencv (default, the reference) or tflite: the gate's TFLite twin on LiteRT (--gate-model)")
    p.add_argument("--gate-model", metavar="gate.tflite", help="the twin for --engine tflite (mobile-derm export-gate)")
    p.set_defaults(func=cmd_check_photo)

    parsers["calibrate-gate"] = p = subparsers.add_parser(
        "calibrate-gate", parents=parents, help="set gate thresholds from a folder of good photos", epilog=EXIT_CODES)
    p.add_argument("folder")
    p.add_argument("--target-pass-rate", type=fraction, default=0.95, help="in (0, 1] (default %(default)s)")
    p.add_argument("--out", required=True, metavar="CONFIG.json")
    p.add_argument("--config", help="base config JSON (default: built-in)")
    p.add_argument("--fit-skin-model", action="store_true",
                   help="also refit the not-skin check's model of what a skin photo looks like (>= 50 photos)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_calibrate_gate)

    parsers["gate-eval"] = p = subparsers.add_parser(
        "gate-eval", parents=parents, help="evaluate the gate on real photos with controlled degradations",
        epilog=EXIT_CODES)
    p.add_argument("--data-root", default=None, help="default: $MOBILE_DERM_DATA or ../shared/data")
    p.add_argument("--out", default="runs/gate_eval")
    p.add_argument("--config", default=None)
    p.add_argument("--limit", type=positive_int, default=None, help="at most N photos per dataset (quick run)")
    p.add_argument("--degrade-per-set", type=whole_number, default=120, help="photos per dataset that get degraded")
    p.add_argument("--seed", type=whole_number, default=0)
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--phone-capture", type=whole_number, default=0, metavar="N",
                   help="also apply the physics-based phone-capture suite to N clean photos per source (default 0: off)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_gate_eval)
    return parsers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mobile_derm_quality.cli", parents=[verbose_option()],
                                     epilog=EXIT_CODES)
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub, parents=[verbose_option()])
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
