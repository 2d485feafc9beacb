"""docs/using-the-result.md: its Python and shell examples run as written, in order, in a fresh folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import required

DOC = Path(__file__).resolve().parents[1] / "docs" / "using-the-result.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)
GOOD = {"success", "deleted", "valid", "ok"}


def examples() -> list[tuple[str, str]]:
    return [(lang, body) for lang, body in FENCE.findall(DOC.read_text()) if lang in ("python", "sh")]


def test_the_page_has_python_and_shell_examples():
    kinds = [lang for lang, _ in examples()]
    assert kinds.count("python") >= 6 and kinds.count("sh") >= 5


def json_statuses(stdout: str) -> list[str]:
    statuses = []
    for line in stdout.splitlines():
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        if isinstance(answer, dict):
            answer = answer.get("result", answer)
            statuses.append(answer.get("status"))
    return statuses


def test_every_example_runs(tmp_path, monkeypatch):
    required("onnxruntime")  # the page shows every extra at work; the test extra installs them
    required("mlflow")
    required("matplotlib")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CEREBROS_ARTIFACTS_ROOT", str(tmp_path / "cerebros_runs"))
    monkeypatch.setenv("CEREBROS_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")  # the example sets it; monkeypatch restores it after
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    namespace: dict = {"__name__": "__docs__"}
    for number, (lang, body) in enumerate(examples(), start=1):
        if lang == "python":
            exec(compile(body, f"{DOC.name} example {number}", "exec"), namespace)  # noqa: S102
            continue
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"example {number}:\n{body}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        statuses = json_statuses(done.stdout)
        assert all(status in GOOD for status in statuses), f"example {number}: {statuses}\n{done.stdout[-2000:]}"
    # what the examples made, looked at once more
    assert (tmp_path / "result.json").is_file() and json.loads((tmp_path / "result.json").read_text())["status"] == "success"
    assert not (tmp_path / "cerebros_runs" / "iris-cli").exists()  # the last example deleted it
    assert (tmp_path / "cerebros_runs" / "iris-demo" / "report.html").is_file()
