"""report.html and the plots: made after each run, self-contained, remade on demand, tables without matplotlib."""

from __future__ import annotations

import json
import re
import shutil
import struct
import sys

import pytest

from conftest import required

import cerebros_service
from cerebros_service.reporting import PLOT_FILES, write_report
from cerebros_service.reporting.architecture_plot import edge_kinds, node_positions
from cerebros_service.reporting.run_data import load_run_data

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    return struct.unpack(">II", data[16:24])


def test_each_run_gets_a_self_contained_report_and_plots(labelled_run):
    required("matplotlib")
    result, run_dir = labelled_run["result"], labelled_run["run_dir"]
    assert result["after_run"]["report"]["status"] == "done"
    page = (run_dir / "report.html").read_text()
    assert result["artifacts"]["report"] == str(run_dir / "report.html")
    assert set(result["artifacts"]["plots"]) == set(PLOT_FILES)
    for name, file_name in PLOT_FILES.items():
        width, height = png_size(run_dir / "plots" / file_name)
        assert width >= 600 and height >= 300, name
    # nothing to fetch, nothing to run: every picture is inline
    assert page.count("src='data:image/png;base64,") == len(PLOT_FILES)
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", page)
    assert "<script" not in page.lower() and "@import" not in page
    for text in ("iris-labelled", "val_accuracy", "2 completed, 0 failed", "best_model.onnx"):
        assert text in page, text


def test_report_remakes_the_page_and_plots(labelled_run, after_root):
    required("matplotlib")
    copy = after_root / "report-copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(labelled_run["run_dir"], copy)
    (copy / "report.html").unlink()
    shutil.rmtree(copy / "plots")
    try:
        answer = cerebros_service.report("report-copy")
        assert answer["status"] == "success" and answer["report"] == str(copy / "report.html")
        assert (copy / "report.html").is_file() and sorted(p.name for p in (copy / "plots").iterdir()) == \
            sorted(PLOT_FILES.values())
        assert json.loads((copy / "run.json").read_text())["after_run"]["report"]["status"] == "done"
        assert cerebros_service.report("no-such-run")["error_type"] == "validation_error"
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def test_without_matplotlib_the_page_keeps_its_tables(labelled_run, tmp_path, monkeypatch):
    copy = tmp_path / "run"
    shutil.copytree(labelled_run["run_dir"], copy)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the plots extra were not installed
    record = write_report(copy)
    assert record["status"] == "done" and record["plots"] == {}
    assert "pip install 'cerebros-service[plots]'" in record["plots_skipped"]
    page = (copy / "report.html").read_text()
    assert "data:image/png" not in page and "No plots:" in page and "Top 2 trials" in page


def test_a_run_with_failed_trials_and_no_events_still_reports(labelled_run, tmp_path):
    required("matplotlib")
    copy = tmp_path / "run"
    shutil.copytree(labelled_run["run_dir"], copy)
    (copy / "events.jsonl").unlink()  # runs from before events were recorded: time is summed durations
    trials = [json.loads(line) for line in (copy / "trials.jsonl").read_text().splitlines()]
    trials[0].update(status="failed", value=None, error="loss became nan at epoch 1")
    (copy / "trials.jsonl").write_text("".join(json.dumps(t) + "\n" for t in trials) + '{"cut sho')
    data = load_run_data(copy)
    assert len(data.trials) == 2 and not data.times_are_wall_clock
    assert data.trial_end_times() == pytest.approx([trials[0]["duration_s"],
                                                    trials[0]["duration_s"] + trials[1]["duration_s"]])
    write_report(copy)
    page = (copy / "report.html").read_text()
    assert "Failed trials (1)" in page and "loss became nan at epoch 1" in page


def test_the_architecture_graph_knows_skips_and_laterals():
    arch = {"input_dim": 3, "dropout": 0.0,
            "levels": [{"units": [{"neurons": 8, "activation": "relu"}, {"neurons": 4, "activation": "elu"}]},
                       {"units": [{"neurons": 6, "activation": "relu"}]},
                       {"units": [{"neurons": 1, "activation": "output"}]}],
            "edges": [[[-1, 0], [0, 0]], [[-1, 0], [0, 1]], [[0, 0], [1, 0]], [[0, 1], [2, 0]],
                      [[-1, 0], [2, 0]], [[1, 0], [2, 0]]],
            "laterals": [[[0, 0], [0, 1]]]}
    kinds = edge_kinds(arch)
    assert sorted(kinds["skip"]) == [((-1, 0), (2, 0)), ((0, 1), (2, 0))]
    assert kinds["lateral"] == [((0, 0), (0, 1))] and len(kinds["neighbour"]) == 4
    positions = node_positions(arch)
    assert positions[(-1, 0)] == (0.0, 0.0) and positions[(2, 0)] == (3.0, 0.0)
    assert positions[(0, 0)][1] > positions[(0, 1)][1]  # units from top to bottom


def members_in_page(page: str) -> list[tuple[int, float]]:
    """(trial, weight) of each row of the report's members table, in the page's order."""
    table = re.search(r"<table class='members'>(.*?)</table>", page, re.S)
    assert table, "no members table"
    return [(int(trial), float(weight.replace(",", ""))) for trial, weight in
            re.findall(r"<tr[^>]*><td class='num'>(\d+)</td><td class='num'>([^<]+)</td>", table.group(1))]


def test_the_report_shows_the_delivered_ensemble(labelled_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(labelled_run["run_dir"], copy)
    run = json.loads((copy / "run.json").read_text())
    assert run["delivered_model"] == "ensemble"  # the default: an ensemble of the best trials
    members = run["ensemble"]["members"]
    assert members and {m["trial"] for m in members} <= {t["trial"] for t in labelled_run["result"]["trials"]}
    # Give the run held-out scores, so that "what the ensemble bought" has numbers to compare
    # (iris's 150 rows are too few for the automatic test split).
    run["ensemble"].update(validation_metric=0.9, test_metric=0.85)
    run["ensemble"]["single_best"].update(validation_metric=0.95, test_metric=0.8)
    run["test_metric"] = 0.85
    (copy / "run.json").write_text(json.dumps(run))
    record = write_report(copy)
    page = (copy / "report.html").read_text()
    assert sorted(members_in_page(page)) == sorted((m["trial"], pytest.approx(m["weight"], abs=1e-4))
                                                   for m in members)
    assert f"ensemble of {len(members)} trial" in page and "best_single_model.keras" in page
    bought = re.search(r"<th>optimism \(validation − test\)</th></tr>(.*?)</table>", page, re.S).group(1)
    cells = re.findall(r"<td class='num'>([^<]+)</td>", bought)
    assert cells == ["0.9000", "0.8500", "0.05000", "0.9500", "0.8000", "0.1500"]  # optimism = val − test
    if "ensemble" in record["plots"]:  # with matplotlib: the weights as bars, inline
        width, height = png_size(copy / "plots" / PLOT_FILES["ensemble"])
        assert width >= 600 and height >= 300
        assert "alt='ensemble member weights'" in page


def test_a_run_from_before_ensembles_still_reports(labelled_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(labelled_run["run_dir"], copy)
    shutil.rmtree(copy / "plots")
    run = json.loads((copy / "run.json").read_text())
    for key in ("ensemble", "delivered_model"):
        del run[key]
    (copy / "run.json").write_text(json.dumps(run))
    record = write_report(copy)
    assert record["status"] == "done" and "ensemble" not in record["plots"]
    page = (copy / "report.html").read_text()
    best = run["best_trial"]
    assert f"is the single best trial (trial {best})" in page and f"single best (trial {best})" in page
    assert "class='members'" not in page and "optimism" not in page
    assert not (copy / "plots" / PLOT_FILES["ensemble"]).exists()
