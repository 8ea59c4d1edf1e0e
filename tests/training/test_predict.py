"""predict_paths: decoding runs ahead on the prefetch threads, results keep input order."""
from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

import training.decode
from training.predict import predict_paths


def _write_scans(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        path = folder / f"scan{i:02d}.png"
        cv2.imwrite(str(path), rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def test_decoding_runs_on_prefetch_threads_and_order_is_kept(tiny_bundle, tmp_path, monkeypatch):
    paths = _write_scans(tmp_path / "study", 7)
    (tmp_path / "study" / "scan03.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    decoded_on: list[str] = []
    real_decode_file = training.decode.decode_file

    def recording_decode_file(path, target_size=None):
        decoded_on.append(threading.current_thread().name)
        return real_decode_file(path, target_size=target_size)

    monkeypatch.setattr(training.decode, "decode_file", recording_decode_file)
    result = predict_paths(tiny_bundle, [tmp_path / "study"], batch_size=2)

    assert len(decoded_on) == 7 and all(name.startswith("prefetch") for name in decoded_on)
    assert [Path(s["path"]).name for s in result["scans"]] == [p.name for p in paths if p.name != "scan03.png"]
    assert [Path(e["path"]).name for e in result["errors"]] == ["scan03.png"]
    assert "PNG" in result["errors"][0]["error"]
