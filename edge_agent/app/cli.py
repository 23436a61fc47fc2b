"""`edge-agent` command line: run, detect, doctor, config check/example, model check, collect export, discover."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from bk_common.logs import configure_logging, say
from edge_agent import __version__, assets
from edge_agent.errors import EdgeError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _model_labels(model: Path) -> set[str]:
    from edge_agent.errors import ModelError

    manifest = model.with_suffix(".json")
    try:
        raw = json.loads(manifest.read_text(encoding="utf-8"))
        aliases = raw.get("rule_labels") or {}  # model label -> the label rules see (docs/models.md)
        return {aliases.get(label, label) for label in raw["labels"]}
    except FileNotFoundError as err:
        raise ModelError(f"{manifest}: model manifest not found (expected beside {model.name})") from err
    except (KeyError, ValueError, AttributeError, TypeError) as err:
        raise ModelError(f"{manifest}: manifest has no valid `labels` list") from err


def cmd_config_check(args: argparse.Namespace) -> int:
    from edge_agent.config import check_rules_against_labels, load_config, resolve_secret

    if args.file is None:
        args.file = assets.EXAMPLE_CONFIG
    cfg = load_config(args.file)
    problems = check_rules_against_labels(cfg, _model_labels(cfg.detector.model), args.file)
    if problems:
        say("\n".join(problems), err=True)
        return EXIT_ERROR
    warnings = []
    if cfg.uplink.enabled and resolve_secret(cfg.uplink.broker.password_env) is None:
        warnings.append(f"uplink.broker.password_env: {cfg.uplink.broker.password_env} is not set (needed at run time)")
    for i, cam in enumerate(cfg.cameras):
        if cam.source.password_env and resolve_secret(cam.source.password_env) is None:
            warnings.append(f"cameras[{i}].source.password_env: {cam.source.password_env} is not set")
    for w in warnings:
        say(f"warning: {args.file}: {w}", err=True)
    rules = sum(len(c.rules) for c in cfg.cameras)
    say(f"{args.file}: OK — device {cfg.device.id}, {len(cfg.cameras)} camera(s), {rules} rule(s), "
          f"model {cfg.detector.model.name}")
    return EXIT_OK


def cmd_config_example(args: argparse.Namespace) -> int:
    say(assets.EXAMPLE_CONFIG.read_text(encoding="utf-8").rstrip("\n"))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from edge_agent.app.agent import Agent
    from edge_agent.app.config_push import ConfigControl, load_active

    cfg, control = load_active(Path(args.config), ConfigControl)
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    def _print_event(alert) -> None:  # the demo watches these lines
        if args.print_events:
            box = alert.boxes[0].box if alert.boxes else []
            say(f"EVENT {alert.state:<6} {alert.type:<20} camera={alert.camera_id} id={alert.id} "
                  f"rev={alert.rev} score={alert.score:.2f} box={box}")

    agent = Agent(cfg, on_event=_print_event, config_control=control)
    agent.run(stop)
    # 75 after a config push, reload or rollback: systemd (Restart=always) starts the agent again
    return agent.config_control.exit_code if agent.config_control is not None else EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from edge_agent.app.doctor import run_doctor

    return run_doctor(args.config, time_url=args.time_url, timeout_s=args.timeout, model_runs=args.model_runs,
                      say=say)


def cmd_detect(args: argparse.Namespace) -> int:
    from edge_agent.app.detect_cmd import run_detect

    return run_detect(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description="BrightKitchen edge agent (明厨亮灶 AI box).")
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the agent until SIGTERM/SIGINT")
    run.add_argument("-c", "--config", required=True, type=Path, help="agent YAML config")
    run.add_argument("--print-events", action="store_true", help="print one line per event on stdout")
    run.set_defaults(func=cmd_run)

    det = sub.add_parser("detect", help="run the detector on an image or video; print detections, write an annotated copy")
    det.add_argument("input", type=Path, help="image (jpg/png) or video file")
    det.add_argument("--model", type=Path, default=None, help="model .tflite (default: shipped int8 NanoDet)")
    det.add_argument("--threshold", type=float, default=None,
                     help="one score threshold for every class (default: the model manifest's per-class thresholds)")
    det.add_argument("--threads", type=int, default=2, help="interpreter threads")
    det.add_argument("--out", type=Path, default=None, help="annotated output (default: INPUT.detected.jpg)")
    det.add_argument("--every", type=float, default=1.0, help="video: seconds between analysed frames")
    det.add_argument("--max-frames", type=int, default=10, help="video: frames to analyse at most")
    det.set_defaults(func=cmd_detect)

    doc = sub.add_parser("doctor", help="check this box: config, model speed, disk, broker, clock, every camera")
    doc.add_argument("-c", "--config", required=True, type=Path, help="agent YAML config")
    doc.add_argument("--time-url", default=None, help="an HTTP(S) URL whose Date header the clock is checked against "
                     "(e.g. the receiver's https://…/api/v1/openapi.json); default: systemd's NTP state")
    doc.add_argument("--timeout", type=float, default=15.0, help="seconds per camera and for the broker")
    doc.add_argument("--model-runs", type=int, default=10, help="timed detector runs")
    doc.set_defaults(func=cmd_doctor)

    conf = sub.add_parser("config", help="configuration tools")
    conf_sub = conf.add_subparsers(dest="config_command", required=True)
    check = conf_sub.add_parser("check", help="validate a config file (schema, model labels, secrets)")
    check.add_argument("file", type=Path, nargs="?", default=None, help="default: the shipped example config")
    check.set_defaults(func=cmd_config_check)
    example = conf_sub.add_parser("example", help="print the shipped example config (edit it into /etc/brightkitchen/agent.yaml)")
    example.set_defaults(func=cmd_config_example)

    from edge_agent.app.model_check import register as register_model

    register_model(sub, say)

    from edge_agent.app.collect_cmd import register as register_collect

    register_collect(sub, say)

    try:
        from edge_agent.onvif.command import register as register_discover
    except ImportError:  # ONVIF support is optional on boxes without onvif-zeep-async
        register_discover = None
    if register_discover is not None:
        register_discover(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, to_stderr=args.command != "run")
    try:
        return args.func(args)
    except EdgeError as err:
        say(f"error: {err}", err=True)
        return EXIT_USAGE if err.__class__.__name__ == "ConfigError" else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
