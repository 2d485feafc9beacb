"""Trials on Dask workers (opts.executor "processes" | "dask"): a real LocalCluster, tiny data.

One cluster of 2 worker processes (1 thread each), the "processes" kind's own
(start_local_cluster), serves most tests through the "dask" kind; its scheduler
reports a dead worker at once (allowed-failures 0), and its workers pin their thread pools from
CEREBROS_WORKER_THREADS as an operator's would. A fresh worker pays TensorFlow's
import (~7 s on 2 cores) once, so tests that restart or kill workers come last.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import threading
import time

import numpy as np
import pytest

from conftest import required

# Real worker processes restarted and killed: run alone (make test runs `serial` tests
# after the parallel ones), since a restart under a loaded CPU can outlast its timeout.
pytestmark = pytest.mark.serial

required("distributed")

from cerebros_service.boundary.schema import DaskExecutor, ProcessesExecutor  # noqa: E402
from cerebros_service.data.dataset import split_indices  # noqa: E402
from cerebros_service.jobs.executors.dask_tasks import TrainTask, WorkerSetup, run_train_task  # noqa: E402
from cerebros_service.jobs.executors.dask_trials import open_trainer, plan_units, scheduler_info, visible_gpus  # noqa: E402
from cerebros_service.run import data_order_seed, run_search, trial_seed  # noqa: E402
from cerebros_service.search.records import Candidate  # noqa: E402
from cerebros_service.search.space import sample_architecture  # noqa: E402
from cerebros_service.search.train import StopCheck, make_training_data  # noqa: E402
from cerebros_service.settings import ExecutionSettings, SearchSettings, Standing  # noqa: E402
from conftest import make_tiny_dataset, tiny_space, tiny_training  # noqa: E402

TIMING_FIELDS = ("duration_s", "first_epoch_s", "model_path")


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client

    from cerebros_service.jobs.executors.local_cluster import start_local_cluster

    local = start_local_cluster(2, {"CEREBROS_WORKER_THREADS": "1"})
    client = Client(local, set_as_default=False)
    yield local, client
    client.close()
    local.close()


@pytest.fixture
def local_cluster_named(cluster, monkeypatch):
    """The shared cluster, configured by the operator as "test" (requests name it, never its address)."""
    monkeypatch.setenv("CEREBROS_DASK_CLUSTERS", f"other=tcp://127.0.0.1:9,test={cluster[0].scheduler_address}")
    return "test"


@pytest.fixture
def trainer(local_cluster_named):
    def make(**options):
        executor = DaskExecutor(kind="dask", cluster=local_cluster_named, workers=2, **options)
        opened = open_trainer(executor, device="cpu")
        made.append(opened)
        return opened

    made = []
    yield make
    for opened in made:
        opened.close()


def _content(record) -> dict:
    """A record without its timings: what must not depend on where it was trained."""
    data = record.as_dict()
    for key in TIMING_FIELDS:
        data.pop(key)
    if data["chunk"] is not None:
        data["chunk"] = {k: v for k, v in data["chunk"].items() if k != "wall_s"}
    return data


def _candidates(data, n: int, *, first: int = 0, seed: int = 3) -> list[Candidate]:
    rng = np.random.default_rng(seed)
    return [Candidate(first + i, 0, sample_architecture(tiny_space(), data.input_dim, data.output_units, rng),
                      trial_seed(seed, first + i)) for i in range(n)]


def _training_data(n: int = 120):
    dataset = make_tiny_dataset("multiclass", n=n)
    train_idx, val_idx = split_indices(dataset.n_samples, 0.25, 0)
    return make_training_data(dataset, train_idx, val_idx)


def _until_stopped():
    """Training that only a deadline, a cancel or a lost worker ends: 5000 epochs of the tiny
    data once took longer than these tests' deadlines, and with dropout units take ~14 s."""
    return tiny_training(epochs=10**7, patience=10**7)


# --------------------------------------------------------------------------- no cluster needed


def test_task_payload_pickles_as_plain_data():
    data = _training_data()
    candidates = _candidates(data, 4)
    units = plan_units(candidates, data, tiny_training(), ExecutionSettings(max_fused_candidates=2))
    task = TrainTask(candidates=units[0].candidates, chunk_index=units[0].chunk_index, training=tiny_training(),
                     execution=ExecutionSettings(max_fused_candidates=2), metric="val_accuracy",
                     direction="max", data_seed=data_order_seed(0),
                     setup=WorkerSetup(backend="tensorflow", device="cpu", threads=1, gpus=()),
                     deadline_unix=time.time() + 60, cancel_event="cerebros-cancel-test", weights="better",
                     weights_above=Standing(0.5, None, -1))
    # The standard pickler, not cloudpickle: no closure, lock, logger or lambda can hide in it.
    assert pickle.loads(pickle.dumps(task)) == task
    assert pickle.loads(pickle.dumps(run_train_task)) is run_train_task  # a top-level function, by name
    back = pickle.loads(pickle.dumps(data))
    assert np.array_equal(back.x_train, data.x_train) and back.task == data.task
    with pytest.raises((TypeError, AttributeError, pickle.PicklingError)):
        pickle.dumps(StopCheck(should_stop=lambda: False))  # why the caller's stop check never travels


def test_units_follow_the_local_trainers_plan():
    from dataclasses import replace

    data = _training_data()
    candidates = _candidates(data, 5)
    fused = plan_units(candidates, data, tiny_training(), ExecutionSettings(max_fused_candidates=2))
    assert [u.trials for u in fused] == [[0, 1], [2, 3], [4]]
    assert [u.chunk_index for u in fused] == [0, 1, None]
    # A broken architecture trains alone, after the chunks, as train_population trains it.
    broken = [candidates[0], replace(candidates[1], architecture={"levels": []}), *candidates[2:]]
    units = plan_units(broken, data, tiny_training(), ExecutionSettings(max_fused_candidates=2))
    assert [(u.trials, u.chunk_index) for u in units] == [([0, 2], 0), ([3, 4], 1), ([1], None)]
    sequential = plan_units(candidates, data, tiny_training(), ExecutionSettings(mode="sequential"))
    assert [u.trials for u in sequential] == [[0], [1], [2], [3], [4]]


def test_executor_opts_defaults_and_errors(monkeypatch):
    from cerebros_service.boundary.schema import check_part
    from cerebros_service.errors import InputError

    monkeypatch.setenv("CEREBROS_DASK_CLUSTERS", "gpu=tcp://10.0.0.5:8786, cpu=tls://10.0.0.6:8786")
    processes = check_part("opts", {"executor": {"kind": "processes"}}).executor
    assert processes.model_dump() == {"kind": "processes", "workers": None, "trials_per_worker": 20,
                                      "memory_limit": None, "retries": 1, "timeout": 60.0}
    dask_kind = check_part("opts", {"executor": {"kind": "dask", "cluster": "cpu",
                                                 "memory_limit": "2GiB"}}).executor
    assert (dask_kind.workers, dask_kind.trials_per_worker, dask_kind.memory_limit) == (1, None, 2 * 2**30)
    assert dask_kind.model_dump()["cluster"] == "cpu" and "address" not in dask_kind.model_dump()
    assert dask_kind.scheduler_address() == "tls://10.0.0.6:8786"  # the operator's address for the name
    for executor, field, words in [
        ({"kind": "dask"}, "cluster", "required"),
        ({"kind": "dask", "cluster": "tpu"}, "cluster", "configured: 'gpu', 'cpu'"),
        ({"kind": "dask", "address": "tcp://10.0.0.5:8786"}, "address", "ask the operator"),
        ({"kind": "dask", "cluster": "gpu", "address": "tcp://10.0.0.5:8786"}, "address", "CEREBROS_DASK_CLUSTERS"),
        ({"kind": "processes", "memory_limit": "lots"}, "memory_limit", "4GB"),
        ({"kind": "processes", "retries": -1}, "retries", "0"),
    ]:
        with pytest.raises(InputError) as caught:
            check_part("opts", {"executor": executor})
        assert any(d.loc == ("opts", "executor", field) and words in d.message for d in caught.value.details)


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    assert visible_gpus("auto") == ("1", "0")
    assert visible_gpus("cpu") == ()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpus("auto") == ()


def test_unreachable_scheduler_is_a_failed_result_not_a_hang(tmp_path, monkeypatch):
    from cerebros_service import run_nas

    monkeypatch.setenv("CEREBROS_ARTIFACTS_ROOT", str(tmp_path))
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("CEREBROS_DASK_CLUSTERS", f"gone=tcp://127.0.0.1:{port}")
    started = time.monotonic()
    result = run_nas({"dataset_id": "iris", "training": {"epochs": 1}},
                     {"run_id": "nowhere", "executor": {"kind": "dask", "cluster": "gone", "timeout": 2}})
    assert time.monotonic() - started < 30
    assert result["status"] == "failed"
    assert result["metadata"]["error_type"] == "executor_error"
    assert f"127.0.0.1:{port}" in result["error"] and "'gone'" in result["error"]
    assert result["error_details"][0]["loc"] == ["opts", "executor", "cluster"]
    assert not (tmp_path / "nowhere").exists()  # nothing was started, nothing left behind


@pytest.mark.parametrize("executor", [
    {"kind": "dask", "address": "ADDRESS"},
    {"kind": "dask", "cluster": "test", "address": "ADDRESS"},
    {"kind": "dask", "cluster": "ADDRESS"},
])
def test_a_request_that_gives_a_scheduler_address_is_refused_and_nothing_connects(executor, tmp_path,
                                                                                   monkeypatch):
    """A listening socket stands for the request writer's scheduler: no connection reaches it
    (a Dask client would unpickle what it sends), and no run folder is made."""
    from cerebros_service import run_nas

    monkeypatch.setenv("CEREBROS_ARTIFACTS_ROOT", str(tmp_path))
    monkeypatch.setenv("CEREBROS_DASK_CLUSTERS", "test=tcp://127.0.0.1:9")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        request = {key: address if value == "ADDRESS" else value for key, value in executor.items()}
        result = run_nas({"dataset_id": "iris", "training": {"epochs": 1}},
                         {"run_id": "hostile", "executor": {**request, "timeout": 2}})
        time.sleep(0.2)  # a connection attempt, had there been one, would be queued by now
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert result["status"] == "failed" and result["error_type"] == "validation_error", result
    (detail,) = result["error_details"]
    field = "cluster" if "address" not in executor else "address"
    assert detail["loc"] == ["opts", "executor", field]
    assert "configured: 'test'" in detail["message"]
    if field == "address":
        assert "ask the operator" in detail["message"] and "CEREBROS_DASK_CLUSTERS" in detail["message"]
    assert not (tmp_path / "hostile").exists()


@pytest.mark.parametrize("raw, words", [
    ("gpu", "has no '='"), ("=tcp://10.0.0.5:8786", "empty name"),
    ("gpu=tcp://10.0.0.5:8786,gpu=tcp://10.0.0.6:8786", "names 'gpu' twice"),
    ("gpu=http://10.0.0.5:8786", "must be a Dask scheduler address"),
])
def test_a_malformed_cluster_list_is_a_clear_error_naming_the_variable(raw, words, monkeypatch):
    from cerebros_service import validate

    monkeypatch.setenv("CEREBROS_DASK_CLUSTERS", raw)
    failed = validate({"dataset_id": "iris"}, {"executor": {"kind": "dask", "cluster": "gpu"}})
    assert failed["status"] == "failed" and failed["error_type"] == "internal_error"  # the operator's to fix
    assert "CEREBROS_DASK_CLUSTERS" in failed["error"] and words in failed["error"], failed["error"]


def test_the_cli_flag_names_the_clusters_and_a_bad_one_stops_the_command(tmp_path):
    import json
    import subprocess
    import sys

    request = tmp_path / "request.json"
    request.write_text(json.dumps({"spec": {"dataset_id": "iris"},
                                   "opts": {"executor": {"kind": "dask", "cluster": "lab"}}}))
    env = {key: value for key, value in os.environ.items() if key != "CEREBROS_DASK_CLUSTERS"}

    def validate(*flags):
        done = subprocess.run([sys.executable, "-m", "cerebros_service", "validate", "--input", str(request),
                               *flags], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        return done.returncode, json.loads(done.stdout)

    code, answer = validate("--dask-clusters", "lab=tcp://10.0.0.5:8786")
    assert (code, answer["status"]) == (0, "valid") and answer["opts"]["executor"]["cluster"] == "lab"
    code, answer = validate()
    assert code == 2 and answer["error_details"][0]["loc"] == ["opts", "executor", "cluster"]
    assert "none are configured" in answer["error"] and "--dask-clusters" in answer["error"]
    code, answer = validate("--dask-clusters", "lab")
    assert code == 2 and answer["status"] == "failed"
    assert "--dask-clusters" in answer["error"] and "has no '='" in answer["error"]
    env["CEREBROS_DASK_CLUSTERS"] = "lab=tcp://10.0.0.5:8786,lab=tcp://10.0.0.6:8786"
    code, answer = validate()  # a malformed variable ends the command at its start
    assert code == 2 and "CEREBROS_DASK_CLUSTERS" in answer["error"] and "twice" in answer["error"]


# --------------------------------------------------------------------------- on the shared cluster


def test_records_match_a_local_run_and_workers_pin_their_threads(cluster, trainer):
    local_cluster, client = cluster
    dataset = make_tiny_dataset("multiclass", n=120)
    settings = SearchSettings(strategy="evolution", seed=5, max_trials=6, population_size=3, space=tiny_space(),
                              training=tiny_training(epochs=1), device="cpu",
                              execution=ExecutionSettings(max_fused_candidates=2))
    local = run_search(dataset, settings)
    events = []
    used = trainer()
    remote = run_search(dataset, settings, trainer=used, on_event=events.append)
    assert [_content(t) for t in local.trials] == sorted((_content(t) for t in remote.trials),
                                                         key=lambda d: d["trial"])
    assert {t.execution for t in remote.trials} == {"fused", "sequential"}  # chunks and a lone candidate
    assert remote.best.value == local.best.value
    assert sorted(e["trial"] for e in events if e["type"] == "trial") == list(range(6))

    def pools():
        import tensorflow as tf

        return (os.environ.get("OMP_NUM_THREADS"), tf.config.threading.get_intra_op_parallelism_threads(),
                tf.config.threading.get_inter_op_parallelism_threads())

    assert set(client.run(pools).values()) == {("1", 1, 1)}  # 2 workers on 2 cores: one thread each
    assert used.summary()["devices"] == ["cpu (tensorflow backend)"]
    assert used.dataset_copies == 1  # scattered once for the run, not per generation or unit


def test_run_nas_reaches_the_cluster_the_operator_named(local_cluster_named, cluster, tmp_path, monkeypatch):
    """The front door by name: the request says "test", the operator's variable says where."""
    from cerebros_service import run_nas

    def transitions(dask_scheduler):
        return dask_scheduler.transition_counter

    monkeypatch.setenv("CEREBROS_ARTIFACTS_ROOT", str(tmp_path))
    before = cluster[1].run_on_scheduler(transitions)
    result = run_nas({"dataset_id": "iris", "training": {"epochs": 1},
                      "search_space": {"max_levels": 1, "max_units_per_level": 1, "max_neurons": 8}},
                     {"run_id": "by-name", "device": "cpu", "budget": {"max_trials": 2, "population_size": 2},
                      "after_run": {"onnx": False, "report": False},
                      "executor": {"kind": "dask", "cluster": local_cluster_named, "workers": 2}})
    assert result["status"] == "success", result
    executor = result["metadata"]["executor"]
    assert executor["kind"] == "dask" and executor["tasks"] >= 1
    # The trials ran through the shared cluster's scheduler, not on a cluster of the run's own.
    assert cluster[1].run_on_scheduler(transitions) > before


def test_max_time_seconds_stops_running_trials_and_sends_no_more(trainer):
    data = _training_data()
    used = trainer()
    # Workers that have not trained yet start first (TensorFlow's import): not part of the budget.
    used(_candidates(data, 2), data, tiny_training(epochs=1), "val_accuracy", "max",
         execution=ExecutionSettings(mode="sequential"))
    started = time.monotonic()
    out = used(_candidates(data, 4), data, _until_stopped(), "val_accuracy", "max",
               execution=ExecutionSettings(mode="sequential"), stop=StopCheck(deadline=started + 8))
    assert time.monotonic() - started < 8 + 20  # the running trials stop at their first batch past it
    assert [r.trial for r in out] == [0, 1]  # trials 2 and 3 were never sent
    assert {r.stop_reason for r in out} == {"max_time_seconds"}


def test_killed_worker_fails_its_trial_and_cancel_stops_the_rest(cluster, trainer):
    """retries 0: the trial whose worker died is a failed record saying so, the others go on;
    then a cancel ends the running trial within a batch and nothing queued starts."""
    local, client = cluster
    data = _training_data()
    candidates = _candidates(data, 4)
    used = trainer(retries=0)
    cancelled = threading.Event()
    records = []

    def on_record(record):
        records.append(record)
        if record.status == "failed":
            cancelled.set()

    killer = threading.Thread(target=_kill_worker_running, args=(client, 0, 4.0), daemon=True)
    killer.start()
    out = used(candidates, data, _until_stopped(), "val_accuracy", "max",
               execution=ExecutionSettings(mode="sequential"), on_record=on_record,
               stop=StopCheck(deadline=time.monotonic() + 120, should_stop=cancelled.is_set))
    by_trial = {r.trial: r for r in out}
    assert by_trial[0].status == "failed" and "died" in by_trial[0].error
    assert by_trial[1].stop_reason == "cancelled"  # it went on until the cancel, then ended within a batch
    assert set(by_trial) == {0, 1}  # trials 2 and 3 never started
    assert [r.trial for r in records] == [0, 1]  # each record reached on_record as it came
    assert [f["trials"] for f in used.summary()["faults"]] == [[0]]
    again = used(_candidates(data, 1, first=4), data, tiny_training(epochs=1), "val_accuracy", "max",
                 execution=ExecutionSettings(mode="sequential"))
    assert [(r.status, r.stop_reason) for r in again] == [("completed", "epochs")]  # the cancel is over


def _kill_worker_running(client, trial: int, after: float = 1.5) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for address, keys in client.processing().items():
            if any(str(k).endswith(f"-t{trial}") for k in keys):
                time.sleep(after)
                os.kill(client.run(os.getpid, workers=[address])[address], signal.SIGKILL)
                return
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_worker_trial_is_retried_on_another_worker(cluster, trainer):
    local, client = cluster
    client.wait_for_workers(2, timeout=60)
    data = _training_data()
    used = trainer(retries=1)
    killer = threading.Thread(target=_kill_worker_running, args=(client, 0, 3.0), daemon=True)
    killer.start()
    out = used(_candidates(data, 2), data, tiny_training(epochs=40, patience=40), "val_accuracy", "max",
               execution=ExecutionSettings(mode="sequential"))
    assert [r.status for r in out] == ["completed", "completed"]
    (fault,) = used.summary()["faults"]
    assert fault["trials"] == [0] and fault["retried"]


def test_workers_are_recycled_after_trials_per_worker(cluster, trainer):
    local, client = cluster
    client.wait_for_workers(2, timeout=60)
    before = set(client.run(os.getpid).values())
    data = _training_data()
    used = trainer(trials_per_worker=1)
    out = used(_candidates(data, 2), data, tiny_training(epochs=1), "val_accuracy", "max",
               execution=ExecutionSettings(mode="sequential"))
    assert [r.status for r in out] == ["completed"] * 2
    assert used.worker_restarts == 2  # each worker process trained its trial, then was replaced
    client.wait_for_workers(2, timeout=60)
    assert before.isdisjoint(client.run(os.getpid).values())
    # The restarted processes held no copy of the dataset: it was sent again, once.
    assert used.dataset_copies == 2


def test_a_killed_worker_comes_back_even_when_the_lost_worker_timer_fires_meanwhile(cluster):
    """Dask's own LocalCluster closes the nanny of a worker that is still gone when
    lost-worker-timeout runs out (15 s by default; 0 here, so that it runs out while the
    nanny restarts it); the cluster stayed a worker short for good."""
    import dask

    local, client = cluster
    client.wait_for_workers(2, timeout=60)
    address, pid = next(iter(client.run(os.getpid).items()))
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "0s"}):
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while address in scheduler_info(client)["workers"] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the timer's callback runs on the cluster's loop
    client.wait_for_workers(2, timeout=60)
    assert len(local.workers) == 2 and pid not in client.run(os.getpid).values()


# --------------------------------------------------------------------------- the front door


def test_run_nas_with_processes_gives_each_worker_a_gpu_and_saves_in_the_caller(tmp_path, monkeypatch):
    """Two workers; this machine "has" GPUs 7 and 8 (CUDA_VISIBLE_DEVICES), so each worker is given
    one of them (which TensorFlow, finding no such GPU, runs on the CPU)."""
    import keras

    from cerebros_service import run_nas

    monkeypatch.setenv("CEREBROS_ARTIFACTS_ROOT", str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7,8")
    events = []
    result = run_nas({"dataset_id": "iris", "training": {"epochs": 1},
                      "search_space": {"max_levels": 1, "max_units_per_level": 1, "max_neurons": 8}},
                     {"run_id": "two-workers", "device": "auto", "execution": "sequential",
                      "budget": {"max_trials": 2, "population_size": 2},
                      "after_run": {"onnx": False, "report": False},
                      "executor": {"kind": "processes", "workers": 2}, "on_event": events.append})
    assert result["status"] == "success", result
    executor = result["metadata"]["executor"]
    assert (executor["kind"], executor["workers"], executor["tasks"], executor["faults"]) == ("processes", 2, 2, [])
    assert executor["cuda_visible_devices"] == {"0": "7", "1": "8"}
    best = result["artifacts"]["best_model"]
    assert best.startswith(str(tmp_path)) and keras.saving.load_model(best) is not None
    assert sorted(e["trial"] for e in events if e["type"] == "trial") == [0, 1]


@pytest.mark.slow
def test_a_job_with_the_dask_kind_runs_its_trials_on_the_cluster(local_cluster_named, tmp_path, monkeypatch):
    from cerebros_service.jobs.runner import JobRunner

    monkeypatch.setenv("CEREBROS_ARTIFACTS_ROOT", str(tmp_path))
    runner = JobRunner()
    try:
        ack = runner.submit({"dataset_id": "iris", "training": {"epochs": 1}},
                            {"device": "cpu", "budget": {"max_trials": 2, "population_size": 2},
                             "after_run": {"onnx": False, "report": False},
                             "executor": {"kind": "dask", "cluster": local_cluster_named}})
        result = runner.result(ack["job_id"], timeout=300)
    finally:
        runner.shutdown()
    assert result["status"] == "success", result
    assert result["metadata"]["executor"]["kind"] == "dask"
    assert result["metadata"]["executor"]["tasks"] >= 1


@pytest.mark.slow
def test_records_match_a_local_run_in_sequential_mode_with_one_worker():
    """However many workers (here one process, started for the run), the same records."""
    dataset = make_tiny_dataset("regression", n=120)
    settings = SearchSettings(strategy="random", seed=9, max_trials=4, population_size=4, space=tiny_space(),
                              training=tiny_training(epochs=2), device="cpu",
                              execution=ExecutionSettings(mode="sequential"))
    local = run_search(dataset, settings)
    used = open_trainer(ProcessesExecutor(kind="processes", workers=1), device="cpu")
    try:
        remote = run_search(dataset, settings, trainer=used)
    finally:
        used.close()
    assert [_content(t) for t in local.trials] == [_content(t) for t in remote.trials]


@pytest.mark.slow
def test_the_documented_cli_cluster_serves_a_search_and_losing_its_scheduler_is_an_executor_error(monkeypatch):
    """`dask scheduler` and `dask worker tcp://…` as docs/scaling.md starts them."""
    import subprocess
    import sys
    from pathlib import Path

    from cerebros_service.jobs.executors.dask_trials import ExecutorError

    dask_cli = Path(sys.executable).with_name("dask")
    command = [str(dask_cli)] if dask_cli.exists() else [sys.executable, "-m", "dask"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    scheduler = subprocess.Popen([*command, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--dashboard-address", ":0"])
    worker = subprocess.Popen([*command, "worker", address, "--nworkers", "1", "--nthreads", "1",
                               "--dashboard-address", ":0"], env={**os.environ, "CEREBROS_WORKER_THREADS": "1"})
    try:
        monkeypatch.setenv("CEREBROS_DASK_CLUSTERS", f"cli={address}")
        used = open_trainer(DaskExecutor(kind="dask", cluster="cli", workers=1, timeout=60), device="cpu")
        data = _training_data()
        try:
            out = used(_candidates(data, 1), data, tiny_training(epochs=1), "val_accuracy", "max",
                       execution=ExecutionSettings(mode="sequential"))
            assert [r.status for r in out] == ["completed"]
            threading.Timer(3.0, scheduler.kill).start()
            started = time.monotonic()
            with pytest.raises(ExecutorError) as lost:
                used(_candidates(data, 2, first=1), data, _until_stopped(),
                     "val_accuracy", "max", execution=ExecutionSettings(mode="sequential"),
                     stop=StopCheck(deadline=time.monotonic() + 300))
            assert time.monotonic() - started < 120
            assert lost.value.error_type == "executor_error" and "Dask" in lost.value.message
        finally:
            used.close()
    finally:
        for process in (worker, scheduler):
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(15)
