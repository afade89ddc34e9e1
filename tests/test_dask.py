"""execution.backend: dask runs the per-recording stages on a Dask cluster (here a
LocalCluster of two worker processes) with outputs identical to the serial run."""
from __future__ import annotations

import os

import pytest
from dask.distributed import Client, LocalCluster, get_task_stream

from oddpipe.parallel import dask_client
from tests.conftest import REPO, make_params, write_params
from tests.pipeline import run_stages

pytestmark = pytest.mark.slow

PER_RECORDING = ("ingest", "sample", "outliers", "filter")


@pytest.fixture(scope="module")
def scheduler():
    """A LocalCluster whose worker processes import oddpipe from this checkout."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO),
                                                              os.environ.get("PYTHONPATH")])))
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster:
            yield cluster.scheduler_address
            dask_client(cluster.scheduler_address).close()
            dask_client.cache_clear()


def outputs(work) -> dict[str, bytes]:
    """Every file the per-recording stages wrote, by path below the work folder."""
    return {str(p.relative_to(work)): p.read_bytes()
            for stage in PER_RECORDING for p in sorted((work / "data" / stage).rglob("*"))
            if p.is_file()}


def test_local_cluster_outputs_equal_the_serial_run(small_demo, tmp_path, scheduler):
    runs, tasks = {}, []
    for name, execution in (("serial", {"n_jobs": 1, "backend": "loky"}),
                            ("dask", {"backend": "dask", "scheduler": scheduler})):
        work = tmp_path / name
        work.mkdir()
        params = write_params(work / "params.yaml",
                              make_params(small_demo["raw_dir"], execution=execution))
        with Client(scheduler) as watcher:
            with get_task_stream(client=watcher) as stream:
                codes = run_stages(work, params, names=PER_RECORDING)
        assert codes == dict.fromkeys(PER_RECORDING, 0)
        runs[name], tasks = outputs(work), tasks + [(name, len(stream.data))]
    # the serial run sent nothing to the cluster; the dask run at least one task for each
    # of its four maps over recordings (ingest scan and write, outliers, filter)
    assert tasks[0] == ("serial", 0) and tasks[1][1] >= 4
    # 9 recordings: 9 .npy + channels, recordings, events, stage.json in data/ingest
    assert sum(k.startswith("data/ingest/") and k.endswith(".npy") for k in runs["serial"]) == 9
    assert runs["dask"].keys() == runs["serial"].keys()
    differing = [k for k in runs["serial"] if runs["serial"][k] != runs["dask"][k]]
    assert differing == []
