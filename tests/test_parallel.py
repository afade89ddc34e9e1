"""The one parallel path: local workers only where the work pays for starting them (said
in the log), two loky workers write what one process writes (ingest, outliers scan), and
one process writes behind its reads."""
import logging
import os
import threading

import numpy as np
import pytest

from oddpipe import continuous, ingest, outliers
from oddpipe.errors import OddpipeError
from oddpipe.parallel import SERIAL, Runner, for_work, map_recordings
from oddpipe.sampling import inspection_sample
from tests.conftest import make_params


def pid(_: int) -> int:
    return os.getpid()


def never():
    raise AssertionError("measured although no loky worker would start")


def test_light_work_runs_in_this_process_and_says_why(caplog):
    loky = Runner(n_jobs=2)
    with caplog.at_level(logging.INFO, logger="oddpipe.parallel"):
        assert for_work(loky, lambda: (False, "20 files, 116 MB")) is SERIAL
        assert "20 files, 116 MB: run in this process" in caplog.text
        caplog.clear()
        assert for_work(loky, lambda: (True, "big")) is loky
        for other in (SERIAL, Runner(backend="dask"), Runner(n_jobs=2, backend="threading")):
            assert for_work(other, never) is other  # one process, running workers, threads
        assert caplog.text == ""
    assert os.getpid() not in map_recordings(pid, range(4), loky)


def test_threads_raise_a_failure_only_once_no_item_runs():
    """A thread cannot be stopped: one still inside numpy or MNE when the interpreter exits
    aborted the filter stage (rc 134) after it had printed its error. The failure is raised
    once the running items have finished; the items not yet started are skipped."""
    started, finished = [], []
    running = threading.Barrier(2)

    def work(item: int) -> int:
        started.append(item)
        if item == 0:
            running.wait(timeout=5)  # item 1 is running too
            raise ValueError("item 0 is broken")
        if item == 1:
            running.wait(timeout=5)
            threading.Event().wait(0.3)  # still running when item 0 has failed
        finished.append(item)
        return item

    with pytest.raises(ValueError, match="item 0 is broken"):
        map_recordings(work, range(40), Runner(n_jobs=2, backend="threading"))
    assert 1 in finished  # waited for, not left running
    assert len(started) < 40  # the rest skipped
    assert map_recordings(lambda i: i * 2, range(5), Runner(n_jobs=2, backend="threading")) \
        == [0, 2, 4, 6, 8]


def test_raw_bytes_counts_each_recording_with_its_side_files(tmp_path):
    sizes = {"a.eeg": 5000, "a.vmrk": 50, "b[1].edf": 700, "b[1].mp4": 9999, "c.set": 40,
             "c.fdt": 4000, "nosuffix": 30, "other.edf": 8888}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(b"x" * size)
    header = "[Common Infos]\nDataFile=a.eeg\nMarkerFile=a.vmrk\n"
    (tmp_path / "a.vhdr").write_text(header)
    (tmp_path / "x.ds").mkdir()  # a CTF folder: its files count
    (tmp_path / "x.ds" / "x.meg4").write_bytes(b"x" * 300)
    (tmp_path / "y.zip").mkdir()  # a folder ingest rejects: nothing
    (tmp_path / "y.zip" / "big").write_bytes(b"x" * 7777)
    (tmp_path / "d.edf").symlink_to(tmp_path / "gone.edf")  # broken: no bytes, no error
    listed = [tmp_path / n for n in ("a.vhdr", "b[1].edf", "c.set", "nosuffix", "x.ds",
                                     "y.zip", "d.edf")]
    expected = len(header) + 5000 + 50 + 700 + 40 + 4000 + 30 + 300  # no video, no other
    assert ingest.raw_bytes(listed) == expected


def test_two_loky_workers_write_what_one_process_writes(small_demo, tmp_path, monkeypatch,
                                                        caplog):
    params = make_params(small_demo["raw_dir"])
    with caplog.at_level(logging.INFO, logger="oddpipe.parallel"):
        ingest.run_ingest(params.ingest, tmp_path / "default", Runner(n_jobs=2))
    assert "MB: run in this process" in caplog.text  # the small demo: too little for workers
    monkeypatch.setattr(ingest, "PARALLEL_BYTES", 0)
    monkeypatch.setattr(outliers, "PARALLEL_VALUES", 0)
    caplog.clear()
    runs = {}
    with caplog.at_level(logging.INFO, logger="oddpipe.parallel"):
        for n in (1, 2):
            out = tmp_path / f"j{n}"
            recordings, events, _ = ingest.run_ingest(params.ingest, out, Runner(n_jobs=n))
            sp = params.sample
            sample = inspection_sample(events, sp.inspect_fraction, sp.inspect_min_per_stratum,
                                       sp.seed)
            result = outliers.detect(recordings, sample, out, params.outliers, Runner(n_jobs=n))
            files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
            runs[n] = (recordings, events, files, result)
    assert caplog.text == ""  # both maps went to the workers
    (rec1, ev1, files1, res1), (rec2, ev2, files2, res2) = runs[1], runs[2]
    assert len(files1) == 11 and files1 == files2  # 9 recordings' .npy, channels.tsv,
    # calibration.json
    assert rec1.equals(rec2) and ev1.equals(ev2)
    assert res1.decisions == res2.decisions
    assert res1.columns.keys() == res2.columns.keys()
    for name, column in res1.columns.items():
        np.testing.assert_array_equal(column, res2.columns[name], err_msg=name)


@pytest.fixture
def write_threads(monkeypatch) -> list[str]:
    """The names of the threads continuous.write_signals runs on, one per call."""
    threads = []
    write_signals = continuous.write_signals

    def recorded(signals, path):
        threads.append(threading.current_thread().name)
        return write_signals(signals, path)

    monkeypatch.setattr(continuous, "write_signals", recorded)
    return threads


def test_write_behind_writes_on_its_thread_and_reports_a_failed_write(tmp_path, write_threads):
    arrays = [continuous.Signals(np.full((2, 5), i, dtype=np.float32)) for i in range(3)]
    with continuous.WriteBehind() as writer:
        for i, a in enumerate(arrays):
            writer.write(a, tmp_path / f"{i}.npy")
    for i, a in enumerate(arrays):
        np.testing.assert_array_equal(continuous.open_data(tmp_path / f"{i}.npy").data, a.data)
    assert len(write_threads) == 3
    assert all(t.startswith("oddpipe-write") for t in write_threads)
    missing = tmp_path / "no-such-folder" / "x.npy"
    with pytest.raises(OddpipeError, match=f"cannot write {missing} .No such file"):
        with continuous.WriteBehind() as writer:
            writer.write(arrays[0], missing)
    with pytest.raises(ValueError, match="the body's"):  # not masked by the write's error
        with continuous.WriteBehind() as writer:
            writer.write(arrays[0], missing)
            raise ValueError("the body's")


def test_ingest_writes_behind_only_where_a_second_core_is_allowed(small_demo, tmp_path,
                                                                  write_threads):
    """n_jobs 1 keeps to one core; n_jobs 2 below the workers' threshold writes each
    recording on a thread while the next is read, and writes the same bytes."""
    params = make_params(small_demo["raw_dir"])
    files = {}
    for n in (1, 2):
        write_threads.clear()
        ingest.run_ingest(params.ingest, tmp_path / f"j{n}", Runner(n_jobs=n))
        files[n] = {p.name: p.read_bytes() for p in sorted((tmp_path / f"j{n}").iterdir())}
        assert len(write_threads) == 9  # one part per recording
        assert {t.startswith("oddpipe-write") for t in write_threads} == {n == 2}
    assert files[1] == files[2]


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_full_disk_names_the_file_and_leaves_no_parts(small_demo, tmp_path, monkeypatch,
                                                         n_jobs):
    """numpy's "not enough free space" OSError has no errno nor file name: the error names
    the part and what to check, and no part file stays behind (n_jobs 2 writes behind)."""
    params = make_params(small_demo["raw_dir"])
    save, calls = np.save, []

    def full_disk(fh, *args, **kwargs):
        calls.append(fh.name)
        if len(calls) == 3:
            raise OSError("Not enough free space to write 1000 bytes after offset 128")
        return save(fh, *args, **kwargs)

    monkeypatch.setattr(continuous.np, "save", full_disk)
    out = tmp_path / "out"
    with pytest.raises(OddpipeError) as err:
        ingest.run_ingest(params.ingest, out, Runner(n_jobs=n_jobs))
    assert f"cannot write {calls[2]} (Not enough free space" in str(err.value)
    assert "its disk has space" in str(err.value)
    assert not (out / ingest.PARTS_DIR).exists()


def test_an_interrupted_ingest_leaves_no_parts(small_demo, tmp_path, monkeypatch):
    params = make_params(small_demo["raw_dir"])
    scan_file, calls = ingest.scan_file, []

    def interrupted(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 4:
            raise KeyboardInterrupt
        return scan_file(*args, **kwargs)

    monkeypatch.setattr(ingest, "scan_file", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        ingest.run_ingest(params.ingest, out, Runner(n_jobs=2))
    assert len(calls) == 4 and not list(out.iterdir())
