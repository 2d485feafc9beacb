"""The local Dask cluster of the ``processes`` kind: worker processes under nannies that restart them.

Imported only when that kind is asked for (Dask is an optional extra).
"""

from __future__ import annotations

import dask
from distributed import LocalCluster
from distributed.deploy.cluster import Cluster


class NannyLocalCluster(LocalCluster):
    """A LocalCluster that leaves a lost worker to its nanny.

    Dask's SpecCluster closes a worker's nanny for good when, ``lost-worker-timeout``
    (15 s) after the worker left, no worker of that name is registered. Our nannies
    restart their workers themselves (after a crash, and when a worker is recycled),
    so that check only misfires: a worker killed at t and recycled at about t + 15 s
    is caught in the second of its restart, its nanny is closed, and the cluster is
    one worker short for the rest of the run.
    """

    def _update_worker_status(self, op, msg):
        if op == "remove":
            Cluster._update_worker_status(self, op, msg)
        else:
            super()._update_worker_status(op, msg)


def start_local_cluster(workers: int, env: dict[str, str]) -> NannyLocalCluster:
    """``workers`` single-threaded worker processes on this machine, their ``env`` set."""
    # allowed-failures 0: a worker death reaches the executor at once, and its retries decide.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        return NannyLocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                 dashboard_address=":0", memory_limit=0, env=env)
