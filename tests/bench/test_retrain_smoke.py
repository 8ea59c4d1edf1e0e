"""bench.retrain trains previous, warm and cold on a tiny folder and prints both times and figures."""

from __future__ import annotations

import json

from bench.retrain import main
from tests.helpers.labelled_folder import write_labelled_folder


def test_retrain_benchmark_smoke(tmp_path, capsys):
    data = write_labelled_folder(tmp_path / "data", per_class=8, size=40)
    code = main(["--data", str(data), "--scans", "0", "--added", "5", "--image-size", "32", "--epochs", "1",
                 "--cnn-epochs", "1", "--warm-epochs", "1", "--views", "0", "--batch-size", "8",
                 "--val-fraction", "0.25", "--models", "resnet50", "--out", str(tmp_path / "out"), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    warm, cold = result["warm"], result["cold"]
    # The warm run computes backbone features only for the added scans; the cold one for all (the
    # CNN's warm start is left out here for time: tests/training/test_retrain_speed.py has it).
    assert 0 < warm["features_computed"] <= 5 < cold["features_computed"]
    assert cold["features_stored"] == 0 and warm["features_stored"] > 0
    assert warm["train"] == cold["train"] and warm["validation"] == cold["validation"]
    for run in (warm, cold):
        gate = run["gate"]
        assert gate["candidate"]["size"] == gate["previous"]["size"] == result["evaluation_scans"] > 0
        assert 0.0 <= gate["candidate"]["accuracy"] <= 1.0
    assert result["speedup"] == round(cold["seconds"] / warm["seconds"], 2)
    assert result["cpu_speedup"] == round(cold["cpu_seconds"] / warm["cpu_seconds"], 2)
    assert result["folder_files"] + result["reviewed_added"] == 32

    # Again with --reuse-previous: the previous version and its cache are kept, not trained again.
    stamp = (tmp_path / "out" / "previous" / "manifest.json").stat().st_mtime_ns
    assert main(["--data", str(data), "--scans", "0", "--added", "5", "--image-size", "32", "--epochs", "1",
                 "--cnn-epochs", "1", "--warm-epochs", "1", "--views", "0", "--batch-size", "8",
                 "--val-fraction", "0.25", "--models", "resnet50", "--out", str(tmp_path / "out"), "--json",
                 "--reuse-previous"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["previous"]["reused"] == str(tmp_path / "out" / "previous") and again["previous"]["seconds"] is None
    assert (tmp_path / "out" / "previous" / "manifest.json").stat().st_mtime_ns == stamp
    assert again["warm"]["features_computed"] == 0  # every row was stored by the first run
    # Other data (another seed picks other reviewed scans): the previous version is trained again.
    assert main(["--data", str(data), "--scans", "0", "--added", "5", "--image-size", "32", "--epochs", "1",
                 "--cnn-epochs", "1", "--warm-epochs", "1", "--views", "0", "--batch-size", "8",
                 "--val-fraction", "0.25", "--models", "resnet50", "--out", str(tmp_path / "out"), "--json",
                 "--reuse-previous", "--seed", "7"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["previous"]["seconds"] is not None


def test_the_table_names_both_runs_and_the_ratio(tmp_path):
    from bench.retrain import table

    run = {"seconds": 10.0, "cpu_seconds": 15.0, "with_gate_seconds": 12.0, "features_computed": 5, "cnn_epochs": 3,
           "gate": {"candidate": {"accuracy": 0.9, "macro_f1": 0.89}, "previous": {"accuracy": 0.8, "macro_f1": 0.79}}}
    text = table({"cold": {**run, "seconds": 50.0}, "warm": run, "previous": run, "speedup": 5.0,
                  "speedup_with_gate": 4.2, "cpu_speedup": 4.5,
                  "load_average": [2.0, 2.0, 2.0], "folder_files": 100, "reviewed_added": 20, "evaluation_scans": 11,
                  "image_size": 64, "machine": "x86_64, 2 CPUs"})
    assert "cold / warm: 5.00x training (4.50x in CPU time), 4.20x with the gate" in text
    assert [line.split()[0] for line in text.splitlines()[2:5]] == ["cold", "warm", "previous"]


def test_the_table_marks_a_reused_previous_version_as_not_timed():
    from bench.retrain import table

    run = {"seconds": 10.0, "cpu_seconds": 15.0, "with_gate_seconds": 12.0, "features_computed": 5, "cnn_epochs": 3,
           "gate": {"candidate": {"accuracy": 0.9, "macro_f1": 0.89}, "previous": {"accuracy": 0.8, "macro_f1": 0.79}}}
    reused = {"seconds": None, "cpu_seconds": None, "features_computed": None, "cnn_epochs": 15, "reused": "/x"}
    text = table({"cold": {**run, "seconds": 50.0}, "warm": run, "previous": reused, "speedup": 5.0,
                  "speedup_with_gate": 4.2, "cpu_speedup": 4.5, "load_average": [2.0, 2.0, 2.0], "folder_files": 100,
                  "reviewed_added": 20, "evaluation_scans": 11, "image_size": 64, "machine": "x86_64, 2 CPUs"})
    assert text.splitlines()[4].split()[:6] == ["previous", "reused", "-", "-", "-", "15"]
