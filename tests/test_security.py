"""The roots belong to the operator (issue 11, items 1 and 2).

Data is read only under CEREBROS_DATA_ROOT (or --data-root), run folders are made
only as <CEREBROS_ARTIFACTS_ROOT>/<run_id> (or --artifacts-root); a request cannot
move either, and no error quotes a file's content.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cerebros_service import run_nas, validate
from cerebros_service.artifacts import ArtifactsError, RunDirectory, confined_run_path
from cerebros_service.operator_config import configure

SECRET = "top-secret-value-42"
CSV_TEXT = "a,b,label\n1,2,cat\n4,5,dog\n7,8,cat\n1.5,2.5,dog\n"


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """An operator's data root holding pets.csv, an artifacts root, and a secret file outside both."""
    data, runs = tmp_path / "data", tmp_path / "runs"
    data.mkdir()
    (data / "pets.csv").write_text(CSV_TEXT)
    (tmp_path / "secret.csv").write_text(f"{SECRET},b,label\n{SECRET},2,x\n")
    monkeypatch.setenv("CEREBROS_DATA_ROOT", str(data))
    monkeypatch.setenv("CEREBROS_ARTIFACTS_ROOT", str(runs))
    monkeypatch.delenv("CEREBROS_ARTIFACTS_DIR", raising=False)
    return data, runs


def csv_spec(path: str, target="label") -> dict:
    return {"dataset": {"source": "csv", "path": path, "target": target}}


def assert_quiet_failure(result: dict, error_type: str, loc: list) -> None:
    assert result["status"] == "failed" and result["error_type"] == error_type, result
    assert loc in [d["loc"] for d in result["error_details"]], result["error_details"]
    assert SECRET not in json.dumps(result)


# --------------------------------------------------------------------------- data root


def test_a_request_cannot_move_the_data_root(roots, tmp_path):
    # The case: data_root "/" read a file outside the operator's root.
    for data_root in ("/", str(tmp_path), "..", "../data/.."):
        result = run_nas(csv_spec("secret.csv"), {"data_root": data_root})
        assert_quiet_failure(result, "validation_error", ["opts", "data_root"])


def test_a_request_may_narrow_the_data_root_to_a_folder_inside_it(roots):
    data, _ = roots
    (data / "team").mkdir()
    (data / "team" / "t.csv").write_text(CSV_TEXT)
    checked = validate(csv_spec("t.csv"), {"data_root": "team"})
    assert checked["status"] == "valid"
    assert checked["opts"]["data_root"] == str((data / "team").resolve())


def test_without_a_data_root_no_file_is_read(roots, monkeypatch):
    monkeypatch.delenv("CEREBROS_DATA_ROOT")
    result = run_nas(csv_spec("pets.csv"))
    assert_quiet_failure(result, "dataset_error", ["spec", "dataset", "path"])
    assert "no data root is set" in result["error"]
    assert validate(csv_spec("pets.csv"), {"data_root": "."})["error_details"][0]["loc"] == ["opts", "data_root"]


@pytest.mark.parametrize("path, problem", [
    ("../secret.csv", "points outside the data root"),
    ("sub/../../secret.csv", "points outside the data root"),
    ("ABSOLUTE", "points outside the data root"),
    ("/etc/passwd", "points outside the data root"),
    ("link.csv", "points outside the data root"),
    ("dirlink/secret.csv", "points outside the data root"),
    ("loop.csv", "cannot be resolved"),
    ("pets.csv\0.txt", "holds a NUL byte"),
    ("missing.csv", "does not exist"),
    (".", "is not a regular file"),
])
def test_data_paths_are_confined_and_their_mistakes_are_dataset_errors(roots, tmp_path, path, problem):
    data, _ = roots
    os.symlink(tmp_path / "secret.csv", data / "link.csv")
    os.symlink(tmp_path, data / "dirlink")
    os.symlink(data / "loop.csv", data / "loop.csv")
    path = str(tmp_path / "secret.csv") if path == "ABSOLUTE" else path
    result = run_nas(csv_spec(path))
    assert_quiet_failure(result, "dataset_error", ["spec", "dataset", "path"])
    assert problem in result["error"]


def test_errors_never_quote_cells_or_unparsable_lines(roots):
    data, _ = roots
    cases = {
        "word.csv": f"a,label\n1,cat\n{SECRET},dog\n",
        "nan.csv": "a,label\n1,cat\nnan,dog\n",
        "huge.csv": "a,label\n1,cat\n1e39,dog\n",
        "ragged.csv": f"a,label\n1,cat\n{SECRET},dog,extra\n",
        "latin1.csv": "a,label\n1,cat\n".encode() + f"{SECRET}\xe9,dog\n".encode("latin-1"),
        "quote.csv": f'a,label\n1,cat\n"{SECRET}"x,dog\n',
        "nul.csv": f"a,label\n1,cat\n{SECRET}\0,dog\n",
        "one_class.csv": f"a,label\n1,{SECRET}\n2,b\n3,b\n4,b\n",
        "spread.csv": "a,label\n" + "".join(f"{v},{i % 2}\n" for i, v in enumerate([1e30, -1e30, 0, 1])),
    }
    for name, content in cases.items():
        (data / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        result = run_nas(csv_spec(name))
        assert result["error_type"] == "dataset_error", (name, result)
        text = json.dumps(result)
        assert SECRET not in text and "1e+30" not in text and "1e+39" not in text, (name, text)
        assert name in result["error"]


def test_npz_errors_never_quote_the_file(roots):
    data, _ = roots
    (data / "text.npz").write_text(SECRET * 10)
    (data / "fake.npz").write_bytes(b"\x93NUMPY\x01\x00" + SECRET.encode() * 5)
    for name in ("text.npz", "fake.npz"):
        result = run_nas({"dataset": {"source": "npz", "path": name}})
        assert result["error_type"] == "dataset_error"
        assert SECRET not in json.dumps(result)


def test_column_names_of_a_file_inside_the_root_may_be_named(roots):
    result = run_nas(csv_spec("pets.csv", target="kind"))
    assert result["error_type"] == "dataset_error"
    assert "no column named 'kind'; columns: a, b, label" in result["error"]
    assert result["error_details"][0]["loc"] == ["spec", "dataset", "target"]


# --------------------------------------------------------------------------- artifacts root


@pytest.mark.parametrize("run_id", ["..", ".", "../escape", "/tmp/abs", "a/b", "a\\b", "nul\0byte", ""])
def test_run_ids_that_are_not_plain_folder_names_are_refused(roots, run_id):
    _, runs = roots
    result = run_nas({"dataset_id": "iris"}, {"run_id": run_id})
    assert result["error_type"] == "validation_error"
    assert ["opts", "run_id"] in [d["loc"] for d in result["error_details"]]
    assert not runs.exists()


@pytest.mark.parametrize("where", ["OUTSIDE", "/", "..", "sub", "ROOT_VIA_LINK"])
def test_a_request_cannot_move_the_artifacts_root(roots, tmp_path, where):
    _, runs = roots
    runs.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "via_link")
    artifacts_dir = {"OUTSIDE": str(tmp_path / "elsewhere"), "ROOT_VIA_LINK": str(tmp_path / "via_link")}.get(
        where, where)
    result = run_nas({"dataset_id": "iris"}, {"artifacts_dir": artifacts_dir, "run_id": "r"})
    assert result["error_type"] == "validation_error"
    assert result["error_details"][0]["loc"] == ["opts", "artifacts_dir"]
    assert list((tmp_path / "elsewhere").iterdir()) == [] and list(runs.iterdir()) == []


def test_naming_the_artifacts_root_itself_is_allowed(roots):
    _, runs = roots
    assert validate({"dataset_id": "iris"}, {"artifacts_dir": str(runs)})["status"] == "valid"


def test_a_symlinked_run_folder_is_never_entered(roots, tmp_path):
    _, runs = roots
    runs.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, runs / "run-1")
    with pytest.raises(ArtifactsError, match="is a symlink"):
        confined_run_path(runs, "run-1")
    run_dir = RunDirectory.create(runs, "run-1")  # the taken name is skipped, never entered
    assert run_dir.path == (runs / "run-1-2").resolve() and not run_dir.path.is_symlink()
    os.symlink(outside, runs / "run-3-2")
    made = RunDirectory.create(runs, "run-3")  # taken names (a symlink too) are skipped
    assert made.path.name == "run-3"
    assert RunDirectory.create(runs, "run-3").path.name == "run-3-3"
    assert list(outside.iterdir()) == []


def test_a_symlinked_file_in_a_run_folder_is_never_written_through(roots, tmp_path):
    _, runs = roots
    run_dir = RunDirectory.create(runs, "r")
    target = tmp_path / "victim.txt"
    target.write_text("untouched")
    os.symlink(target, run_dir.file("trials.jsonl"))
    with pytest.raises(OSError):
        run_dir.append_jsonl("trials.jsonl", {"trial": 0})
    os.symlink(target, run_dir.file("run.json"))
    run_dir.write_json("run.json", {"status": "running"})  # replaces the link, not its target
    assert target.read_text() == "untouched"
    assert not run_dir.file("run.json").is_symlink()
    with pytest.raises(ValueError):
        run_dir.file("../escape.json")


def test_run_folders_are_made_in_the_operators_root(roots, tmp_path):
    _, runs = roots
    x = np.random.default_rng(0).normal(size=(30, 2))
    result = run_nas({"dataset": {"source": "arrays", "x": x, "y": np.arange(30) % 2},
                      "search_space": {"max_levels": 1, "max_units_per_level": 1, "max_neurons": 8},
                      "training": {"epochs": 1}},
                     {"run_id": "mine", "budget": {"max_trials": 1, "population_size": 1},
                      "parameters": {"elite_size": 0}})
    assert result["status"] == "success", result
    assert result["artifacts"]["run_dir"] == str((runs / "mine").resolve())


# --------------------------------------------------------------------------- operator's ways to set them


def test_configure_sets_the_roots_and_refuses_a_missing_data_root(roots, tmp_path, monkeypatch):
    monkeypatch.setenv("CEREBROS_DATA_ROOT", "placeholder")  # restored after the test
    other = tmp_path / "other"
    other.mkdir()
    answer = configure(data_root=other, artifacts_root=tmp_path / "other_runs")
    assert answer["status"] == "configured"
    assert answer["data_root"] == str(other.resolve())
    assert answer["artifacts_root"] == str((tmp_path / "other_runs").resolve())
    refused = configure(data_root=tmp_path / "missing")
    assert refused["status"] == "failed" and "must be an existing folder" in refused["error"]


def test_cli_flags_set_the_roots(tmp_path):
    data = tmp_path / "flagged"
    data.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEREBROS_")}
    request = json.dumps({"spec": csv_spec("pets.csv")})
    done = subprocess.run(
        [sys.executable, "-m", "cerebros_service", "validate", "--data-root", str(data),
         "--artifacts-root", str(tmp_path / "flag_runs")],
        input=request, capture_output=True, text=True, env=env, timeout=60)
    answer = json.loads(done.stdout)
    assert done.returncode == 0, done.stderr
    assert answer["opts"]["data_root"] == str(data.resolve())
    assert answer["opts"]["artifacts_dir"] == str((tmp_path / "flag_runs").resolve())
    missing = subprocess.run(
        [sys.executable, "-m", "cerebros_service", "validate", "--data-root", str(tmp_path / "nope")],
        input=request, capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 2
    assert json.loads(missing.stdout)["error_details"][0]["loc"] == ["data_root"]


# --------------------------------------------------------------------------- endpoints are the operator's


def test_configure_sets_the_clusters_and_servers_and_refuses_a_malformed_list(monkeypatch):
    monkeypatch.setenv("CEREBROS_DASK_CLUSTERS", "")  # restored after the test
    monkeypatch.setenv("CEREBROS_MLFLOW_SERVERS", "")
    answer = configure(dask_clusters={"gpu": "tcp://10.0.0.5:8786", "cpu": "tls://10.0.0.6:8786"},
                       mlflow_servers="team=http://mlflow.internal:5000")
    assert answer["status"] == "configured", answer
    assert answer["dask_clusters"] == {"gpu": "tcp://10.0.0.5:8786", "cpu": "tls://10.0.0.6:8786"}
    assert answer["mlflow_servers"] == {"team": "http://mlflow.internal:5000"}
    assert os.environ["CEREBROS_DASK_CLUSTERS"] == "gpu=tcp://10.0.0.5:8786,cpu=tls://10.0.0.6:8786"
    valid = validate({"dataset_id": "iris"}, {"executor": {"kind": "dask", "cluster": "gpu"},
                                              "tracking": {"mlflow": {"server": "team"}}})
    assert valid["status"] == "valid", valid
    for bad, words in [({"dask_clusters": {"": "tcp://10.0.0.5:8786"}}, "empty name"),
                       ({"dask_clusters": "gpu=tcp://a:1,gpu=tcp://b:1"}, "names 'gpu' twice"),
                       ({"mlflow_servers": {"team": 5000}}, "both strings"),
                       ({"mlflow_servers": "team"}, "has no '='"),
                       ({"mlflow_servers": {"team": "http://a,b"}}, "must be a tracking URI")]:
        refused = configure(**bad)
        assert refused["status"] == "failed" and words in refused["error"], (bad, refused)
        variable = "CEREBROS_DASK_CLUSTERS" if "dask_clusters" in bad else "CEREBROS_MLFLOW_SERVERS"
        assert refused["error_details"][0]["loc"] == ["env", variable]
    assert os.environ["CEREBROS_DASK_CLUSTERS"] == "gpu=tcp://10.0.0.5:8786,cpu=tls://10.0.0.6:8786"  # unchanged


def test_serve_flags_name_the_clusters_and_servers_a_request_picks(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEREBROS_")}
    requests = [
        {"id": 1, "op": "validate", "spec": {"dataset_id": "iris"},
         "opts": {"executor": {"kind": "dask", "cluster": "lab"}, "tracking": {"mlflow": {"server": "team"}}}},
        {"id": 2, "op": "validate", "spec": {"dataset_id": "iris"},
         "opts": {"executor": {"kind": "dask", "address": "tcp://attacker.test:8786"}}},
        {"id": 3, "op": "validate", "spec": {"dataset_id": "iris"},
         "opts": {"tracking": {"mlflow": {"tracking_uri": "https://attacker.test"}}}},
    ]
    done = subprocess.run(
        [sys.executable, "-m", "cerebros_service", "serve", "--artifacts-root", str(tmp_path / "runs"),
         "--dask-clusters", "lab=tcp://10.0.0.5:8786", "--mlflow-servers", "team=http://mlflow.internal:5000"],
        input="".join(json.dumps(r) + "\n" for r in requests), capture_output=True, text=True, env=env,
        cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    answers = {line["id"]: line["result"] for line in map(json.loads, done.stdout.splitlines()) if "result" in line}
    assert answers[1]["status"] == "valid", answers[1]
    assert answers[1]["opts"]["executor"]["cluster"] == "lab"
    assert answers[1]["opts"]["tracking"]["mlflow"]["server"] == "team"
    for request_id, field in ((2, ["opts", "executor", "address"]),
                              (3, ["opts", "tracking", "mlflow", "tracking_uri"])):
        refused = answers[request_id]
        assert refused["error_type"] == "validation_error" and refused["error_details"][0]["loc"] == field
        assert "ask the operator" in refused["error"]
