"""`edge-agent collect export DIR --format coco|yolo`: the frame collector's examples for labelling.

The store is the one the agent config names (`collect.dir`, default `collect` beside storage.path),
or `--store DIR`. The export is a new folder for Label Studio or CVAT (edge_agent/collect/export.py)
with LICENCE.txt: the config's `collect.licence` and each camera's consent note. Exit 0 when
written, 2 when there is nothing to export or the folder is not empty.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from edge_agent.collect.export import ExportError, export_coco, export_yolo
from edge_agent.collect.store import REASONS, ExampleStore

EXIT_OK, EXIT_FAILED = 0, 2


def run_export(args: argparse.Namespace, say: Callable[..., None]) -> int:
    licence, device_id = args.licence or "", ""
    if args.store is not None:
        if not (args.store / "examples").is_dir():
            say(f"导出失败 (export failed): {args.store}: not a collector folder (no examples/)", err=True)
            return EXIT_FAILED
        store = ExampleStore(args.store, quota_bytes=1 << 62, pending_alerts=0)
    else:
        from edge_agent.app.collect_wiring import store_for
        from edge_agent.config import load_config

        cfg = load_config(args.config)
        store, device_id = store_for(cfg), cfg.device.id
        licence = args.licence or cfg.collect.licence
    examples = store.examples(cameras=args.camera, reasons=args.reason)
    write = export_coco if args.format == "coco" else export_yolo
    try:
        path = write(store, examples, args.dir, licence=licence, device_id=device_id)
    except ExportError as err:
        say(f"导出失败 (export failed): {err}", err=True)
        return EXIT_FAILED
    by_reason = {r: sum(1 for ex in examples if ex.reason == r) for r in REASONS}
    say(f"已导出 {len(examples)} 张 ({args.format}): {path} — " + ", ".join(f"{r} {n}" for r, n in by_reason.items()))
    if not licence:
        say("warning: no licence given (collect.licence or --licence); LICENCE.txt says so", err=True)
    return EXIT_OK


def register(sub: argparse._SubParsersAction, say: Callable[..., None]) -> None:
    """Add `collect export` to the edge-agent command line."""
    collect = sub.add_parser("collect", help="the frame collector's examples (hard cases kept for training)")
    csub = collect.add_subparsers(dest="collect_command", required=True)
    exp = csub.add_parser("export", help="write the kept examples as a COCO or YOLO folder for Label Studio / CVAT")
    exp.add_argument("dir", type=Path, help="new (or empty) folder to write")
    exp.add_argument("--format", choices=("coco", "yolo"), required=True, help="COCO instances JSON or YOLO txt")
    where = exp.add_mutually_exclusive_group(required=True)
    where.add_argument("-c", "--config", type=Path, help="agent YAML config (its collect.dir and collect.licence)")
    where.add_argument("--store", type=Path, help="the collector's folder itself")
    exp.add_argument("--camera", action="append", default=None, help="only this camera (repeatable)")
    exp.add_argument("--reason", action="append", choices=REASONS, default=None, help="only this kind (repeatable)")
    exp.add_argument("--licence", default=None, help="licence text for the export (default: collect.licence)")
    exp.set_defaults(func=lambda args: run_export(args, say))
