"""Property fuzz of data loading: files, arrays and registered lists.

Whatever a file or an array holds, loading it gives a Dataset that float32 training
can use (finite values, finite statistics, at least 2 rows per class) or a
dataset_error / validation_error: never another exception, and never a message
quoting a cell. The example budget is fixed and derandomized, so CI runs the same
cases every time.
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cerebros_service import register_dataset, unregister_dataset
from cerebros_service.api import load_dataset
from cerebros_service.boundary.schema import check_request
from cerebros_service.data.dataset import make_dataset
from cerebros_service.data.files import load_csv, load_npz
from cerebros_service.errors import DatasetError, InputError

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
MARKER = "zqx"  # planted in cells: it must never come back in an error


@pytest.fixture
def root(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    monkeypatch.setenv("CEREBROS_DATA_ROOT", str(data))
    return data


def assert_trainable(dataset) -> None:
    """What the engine relies on: float32 copies and their statistics are finite."""
    x32 = np.asarray(dataset.x, dtype=np.float32)
    assert np.isfinite(x32).all()
    assert np.isfinite(x32.astype(np.float64).var(axis=0).astype(np.float32)).all()
    assert dataset.n_features >= 1 and dataset.n_samples >= 4
    if dataset.task == "regression":
        assert np.isfinite(np.asarray(dataset.y, dtype=np.float32)).all()
    else:
        counts = np.bincount(np.asarray(dataset.y, dtype=np.int64))
        assert (counts >= 2).all() and len(counts) == dataset.n_classes


cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**40), 10**40).map(str),
    st.sampled_from(["", " ", "nan", "inf", "-inf", "1e39", "1e30", "-1e30", '"1"', "0x10", "1_0"]),
    st.text(alphabet="0123456789.-e", max_size=6),
    st.integers(0, 99).map(lambda i: f"{MARKER}{i}"),
)
labels = st.one_of(st.sampled_from(["a", "b", "c", "0", "1", "", "nan", "2.5"]), st.integers(0, 3).map(str),
                   st.just(f"{MARKER}label"))


@FUZZ
@given(rows=st.lists(st.tuples(cells, cells, labels), min_size=0, max_size=12),
       extra=st.sampled_from(["", "\n", "\n\n", "1,2\n", "1,2,3,4\n", "\xff\n", "a\0b,1,1\n"]),
       task=st.sampled_from(["auto", "classification", "regression", "binary"]))
def test_any_csv_loads_trainable_or_refuses_without_quoting(root, rows, extra, task):
    text = "a,b,y\n" + "".join(f"{a},{b},{y}\n" for a, b, y in rows) + extra
    (root / "f.csv").write_bytes(text.encode("utf-8", "surrogateescape"))
    try:
        dataset = load_csv("f.csv", "y", data_root=root, task=task)
    except DatasetError as exc:
        assert MARKER not in exc.message and all(MARKER not in d.message for d in exc.details)
        return
    assert_trainable(dataset)


@FUZZ
@given(raw=st.binary(max_size=300), keep=st.integers(0, 2000))
def test_any_npz_bytes_load_or_refuse(root, raw, keep):
    buffer = io.BytesIO()
    np.savez(buffer, x=np.arange(12.0).reshape(6, 2), y=np.array([0, 1] * 3))
    whole = buffer.getvalue()
    for content in (raw, whole[:keep] + raw, raw + whole):
        (root / "f.npz").write_bytes(content)
        try:
            assert_trainable(load_npz("f.npz", data_root=root))
        except DatasetError:
            pass


@FUZZ
@given(members=st.dictionaries(st.sampled_from(["x.npy", "y.npy", "x", "z.npy"]),
                               st.binary(max_size=200), max_size=3))
def test_an_archive_of_junk_members_is_refused(root, members):
    with zipfile.ZipFile(root / "m.npz", "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    with pytest.raises(DatasetError):
        load_npz("m.npz", data_root=root)


dtypes = st.sampled_from([np.float64, np.float32, np.float16, np.int64, np.uint8, np.bool_, np.complex128])
specials = st.sampled_from([0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 1e30, -1e30, 1e39, 3e38, 1e-300])


@st.composite
def feature_arrays(draw):
    dtype = draw(dtypes)
    shape = draw(st.tuples(st.integers(0, 9), st.integers(0, 3)))
    base = draw(hnp.arrays(np.float64, shape, elements=st.floats(-1e3, 1e3)))
    for _ in range(draw(st.integers(0, 2))):
        if base.size:
            base.flat[draw(st.integers(0, base.size - 1))] = draw(specials)
    with np.errstate(all="ignore"):
        return base.astype(dtype)


@st.composite
def target_arrays(draw, n):
    kind = draw(st.sampled_from(["int", "float", "str", "bool", "object", "complex"]))
    if kind == "int":
        return np.array(draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n)), dtype=np.int64)
    if kind == "float":
        return np.array(draw(st.lists(st.one_of(st.floats(-1e3, 1e3), specials), min_size=n, max_size=n)))
    if kind == "str":
        return np.array(draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n)))
    if kind == "bool":
        return np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    if kind == "complex":
        return np.ones(n, dtype=np.complex128)
    values = draw(st.lists(st.one_of(st.none(), st.integers(0, 2), st.sampled_from(["a", 1.5, 400]).map(lambda v: 10**v if v == 400 else v)),
                           min_size=n, max_size=n))
    array = np.empty(n, dtype=object)
    array[:] = values
    return array


@FUZZ
@given(data=st.data(), task=st.sampled_from(["auto", "classification", "binary", "multiclass", "regression"]))
def test_any_arrays_become_a_trainable_dataset_or_a_dataset_error(data, task):
    x = data.draw(feature_arrays())
    y = data.draw(target_arrays(x.shape[0]))
    try:
        dataset = make_dataset("fuzz", x, y, task=task)
    except DatasetError as exc:
        assert exc.message
        return
    assert_trainable(dataset)


list_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.sampled_from([400, 5000]).map(lambda e: 10**e),
              st.floats(allow_nan=True), st.text(max_size=3), st.binary(max_size=3)),
    lambda children: st.lists(children, max_size=5), max_leaves=30)


@FUZZ
@given(x=list_values, y=list_values)
def test_register_dataset_answers_any_lists(x, y):
    try:
        result = register_dataset("fuzzed", x, y)
    finally:
        unregister_dataset("fuzzed")
    json.dumps(result, allow_nan=False)
    assert result["status"] in ("registered", "failed")
    if result["status"] == "failed":
        assert result["error_type"] in ("dataset_error", "validation_error"), result


path_parts = st.sampled_from(["..", ".", "f.csv", "sub", "link", "loop", "/", "\0", "f.csv\0", "missing.csv",
                              "//", "~", "%2e%2e"])


@FUZZ
@given(parts=st.lists(path_parts, min_size=1, max_size=4), absolute=st.booleans())
def test_any_path_reads_a_file_inside_the_root_or_is_refused(root, parts, absolute):
    (root / "f.csv").write_text("a,y\n1,0\n2,1\n3,0\n4,1\n")
    (root / "sub").mkdir(exist_ok=True)
    for name, target in (("link", root.parent), ("loop", root / "loop")):
        if not os.path.lexists(root / name):
            os.symlink(target, root / name)
    path = ("/" if absolute else "") + "/".join(parts)
    try:
        spec, opts = check_request({"dataset": {"source": "csv", "path": path, "target": "y"}}, {})
        dataset = load_dataset(spec, opts)
    except (DatasetError, InputError):
        return
    assert dataset.n_samples == 4  # the only file inside the root
