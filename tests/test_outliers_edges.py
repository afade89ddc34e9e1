"""Outlier detection edge cases: notch-filtered data, mixed sampling rates, a subject with
one recording, line frequency auto / alias / skipped harmonics, half a recording
contaminated, a channel near float32's largest value, and the real clinical iEEG clips
where line noise is everywhere."""
import subprocess
import sys
import warnings

import mne
import numpy as np
import pandas as pd
import pytest

from oddpipe.outliers import (
    detect_line_freq, flag_channels, global_line_noise, observable_lines, scan_array,
    scan_files,
)
from oddpipe.params import Outliers
from tests.conftest import REPO, shared_dataset

N_CH = 16
NAMES = [f"E{i}" for i in range(1, N_CH + 1)]


def background(sfreq: float, seconds: float, seed: int) -> np.ndarray:
    """20 uV white-ish noise with a 0.5 uV 60 Hz component everywhere (volts)."""
    rng = np.random.default_rng(seed)
    n = int(sfreq * seconds)
    t = np.arange(n) / sfreq
    return (rng.standard_normal((N_CH, n)) * 20 + 0.5 * np.sin(2 * np.pi * 60 * t)) * 1e-6


def mains(sfreq: float, n: int, amp_v: float, freq: float = 60.0) -> np.ndarray:
    t = np.arange(n) / sfreq
    harmonics = np.arange(freq, sfreq / 2, freq)
    return sum(amp_v / (k + 1) * np.sin(2 * np.pi * f * t) for k, f in enumerate(harmonics))


def pooled_flags(recordings: dict, params=Outliers(), line_freq=60.0) -> pd.DataFrame:
    """{name: (subject, data, sfreq)} -> flags table, as the stage pools a dataset."""
    tables = [scan_array(data, sfreq, NAMES, line_freq, name, params).table
              .assign(recording=name, subject=subject)
              for name, (subject, data, sfreq) in recordings.items()]
    return flag_channels(pd.concat(tables, ignore_index=True), params)


def flagged(flags: pd.DataFrame) -> set:
    return set(zip(flags.loc[flags["flagged"], "recording"], flags.loc[flags["flagged"], "channel"]))


def test_already_notch_filtered_data_is_not_an_outlier():
    sfreq = 500.0
    recs = {f"r{i}": ("01", background(sfreq, 120, i), sfreq) for i in range(4)}
    notched = background(sfreq, 120, 9)
    notched = mne.filter.notch_filter(notched, sfreq, [60, 120, 180, 240], verbose="error")
    recs["notched"] = ("01", notched, sfreq)
    flags = pooled_flags(recs)
    assert flagged(flags) == set()
    dip = flags.loc[flags["recording"] == "notched", "line_ratio_db"]
    assert (dip < 0).all()  # a dip at the line frequency, reported as such


def test_mixed_sampling_rates_find_the_contaminated_channel_in_each():
    recs = {}
    for i, sfreq in enumerate([250.0, 500.0, 250.0, 500.0]):
        data = background(sfreq, 120, i)
        if i < 2:
            data[3] += mains(sfreq, data.shape[1], 0.05)
        recs[f"r{i}"] = (f"{i % 2}", data, sfreq)
    assert flagged(pooled_flags(recs)) == {("r0", "E4"), ("r1", "E4")}


def test_subject_with_a_single_recording_degrades_gracefully():
    sfreq = 250.0
    data = background(sfreq, 60, 1)
    data[7] += mains(sfreq, data.shape[1], 0.05)
    recs = {"only": ("solo", data, sfreq),
            **{f"o{i}": ("other", background(sfreq, 60, 10 + i), sfreq) for i in range(3)}}
    flags = pooled_flags(recs)
    solo = flags[flags["subject"] == "solo"]
    assert solo["z_cross"].isna().all()  # no other recording to compare with: not computed
    assert flagged(flags) == {("only", "E8")}


def test_half_a_recording_at_1000x_leaves_the_clean_half_unflagged():
    sfreq = 500.0
    recs = {f"r{i}": ("01", background(sfreq, 60, i), sfreq) for i in range(3)}
    data = background(sfreq, 60, 5)
    data[: N_CH // 2] += mains(sfreq, data.shape[1], 20e-6 * 1000)
    recs["half"] = ("01", data, sfreq)
    assert flagged(pooled_flags(recs)) == {("half", n) for n in NAMES[: N_CH // 2]}


def test_channels_near_float32s_largest_value_are_flagged_with_finite_features():
    """A broken header's gain can put a channel at ~3e38 V in the float32 array: its sums
    overflow float32, yet it must get finite (huge) features and be flagged, not NaN."""
    sfreq = 500.0
    recs = {f"r{i}": ("01", background(sfreq, 60, i).astype(np.float32), sfreq)
            for i in range(3)}
    data = background(sfreq, 60, 7).astype(np.float32)
    n = data.shape[1]
    data[2] = np.float32(3e38) * np.sin(np.arange(n) / 7.0).astype(np.float32)
    data[7] = np.linspace(-3.3e38, 3.3e38, n, dtype=np.float32)  # sums and x - trend overflow
    recs["broken"] = ("01", data, sfreq)
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning leaks out either
        flags = pooled_flags(recs)
    columns = ["std", "ptp", "log_std", "line_ratio_db", "z_within", "z_cross"]
    assert np.isfinite(flags[columns].to_numpy(float)).all()
    assert flagged(flags) == {("broken", "E3"), ("broken", "E8")}
    broken = flags.set_index(["recording", "channel"]).loc["broken"]
    assert broken.loc["E3", "log_std"] > 38 and "amplitude" in broken.loc["E3", "reasons"]


def test_float64_channels_beyond_1e154_and_subnormal_ones_stay_finite():
    """The QC path scans float64 (MNE's get_data): a header's absurd physical range can give
    1e200 V, whose square overflows float64; a dead channel may sit at 1e-39 V."""
    sfreq = 500.0
    recs = {f"r{i}": ("01", background(sfreq, 60, i), sfreq) for i in range(3)}
    data = background(sfreq, 60, 8)
    data[4] = 1e200 * np.sin(np.arange(data.shape[1]) / 7.0)
    data[9] = 1e-39
    recs["broken"] = ("01", data, sfreq)
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        flags = pooled_flags(recs)
    columns = ["std", "ptp", "log_std", "line_ratio_db", "z_within", "z_cross"]
    assert np.isfinite(flags[columns].to_numpy(float)).all()
    assert flagged(flags) == {("broken", "E5"), ("broken", "E10")}
    broken = flags.set_index(["recording", "channel"]).loc["broken"]
    assert broken.loc["E10", "reasons"].startswith("flat")


def test_most_channels_at_an_implausible_amplitude_are_flagged_not_the_clean_ones():
    """One file checked alone (scripts/scan_outliers.py): 9 of 16 channels with a gain
    10^6 too large (20 V). Relative rules alone would take them for the norm and call the
    7 clean channels flat; the absolute ceiling names the broken ones."""
    sfreq = 500.0
    data = background(sfreq, 60, 3)
    data[:9] *= 1e6
    flags = pooled_flags({"alone": ("01", data, sfreq)})
    assert flagged(flags) == {("alone", n) for n in NAMES[:9]}
    reasons = flags.set_index("channel")["reasons"]
    assert reasons["E1"].startswith("implausible amplitude (std 19.9 V")
    assert "outliers.amp_ceiling 0.01 V" in reasons["E1"]


def test_line_frequency_auto_picks_50_or_60_and_never_guesses():
    sfreq = 500.0
    for freq in (50.0, 60.0):
        data = background(sfreq, 60, 3)[:, : int(sfreq * 4)] * 0
        data += np.random.default_rng(0).standard_normal(data.shape) * 20e-6
        data[2] += mains(sfreq, data.shape[1], 2e-4, freq)
        feats = scan_array(data, sfreq, NAMES, "auto", "r", Outliers(segment_s=4.0))
        assert feats.table["line_freq"].iloc[0] == freq
    noise = np.random.default_rng(1).standard_normal((N_CH, int(sfreq * 60))) * 20e-6
    feats = scan_array(noise, sfreq, NAMES, "auto", "r", Outliers())
    assert feats.table["line_freq"].isna().all()
    assert "no clear peak" in feats.table["line_note"].iloc[0]
    assert (feats.table["line_ratio_db"] == 0).all()
    freq, note = detect_line_freq(np.arange(10.0), np.ones((2, 10)), 20.0)
    assert freq is None and "unobservable" in note


def test_harmonics_near_nyquist_skipped_and_alias_checked_with_a_note():
    harmonics, note = observable_lines(60.0, 250.0)
    assert list(harmonics) == [60.0] and "120" in note and "skipped" in note
    harmonics, note = observable_lines(60.0, 100.0)
    assert list(harmonics) == [40.0] and "alias at 40 Hz" in note
    harmonics, note = observable_lines(60.0, 120.0)  # alias at 0 Hz: not observable
    assert len(harmonics) == 0 and "not observable" in note


def test_global_line_noise_is_stated():
    flags = pd.DataFrame({"line_ratio_db": [30.0, 25.0, 40.0, 5.0]})
    assert global_line_noise(flags) == {"line_noise_global": True,
                                        "fraction_channels_line_noise": 0.75,
                                        "median_line_ratio_db": 27.5}


@pytest.mark.realdata
def test_clinical_ieeg_report_states_global_line_noise_and_ranks(tmp_path):
    root = shared_dataset("ieeg_line_noise")
    files = [root / "mne-misc-data/ecog/sample_ecog.edf",
             root / "mne-misc-data/seeg/sample_seeg.edf",
             next((root / "mne-testing-data/Persyst").glob("*.lay"))]
    result = scan_files(files, Outliers())
    flags = result.flags
    stats = global_line_noise(flags)
    assert stats["line_noise_global"] and stats["fraction_channels_line_noise"] > 0.75
    assert {d["line_freq"] for d in result.decisions.values()} == {60.0}
    # it does not drown: a minority is flagged, and the worst are the ones SOURCES.md names
    assert flags["flagged"].mean() < 0.2
    worst = flags.sort_values("line_ratio_db", ascending=False).groupby("recording").head(1)
    assert dict(zip(worst["recording"], worst["channel"]))["sample_ecog"] == "EKGR"
    assert set(flags.loc[flags["flagged"] & (flags["recording"].str.contains("clip2")),
                         "channel"]) >= {"POL X14"}
    out = tmp_path / "qc.html"
    run = subprocess.run([sys.executable, str(REPO / "scripts/scan_outliers.py"),
                          *map(str, files), "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    page = out.read_text()
    assert "Line noise is global" in page and "Ranking by line-noise ratio" in page


def test_a_recording_shorter_than_a_segment_is_left_out_with_a_reason(tmp_path):
    from oddpipe import continuous
    from oddpipe.outliers import detect

    sfreq, rows = 250.0, []
    continuous.write_channels(tmp_path, NAMES, ["eeg"] * len(NAMES))
    for name, seconds in (("long1", 60), ("long2", 60), ("long3", 60), ("short", 2)):
        data = background(sfreq, seconds, len(rows))
        continuous.write_array(data, continuous.data_path(tmp_path, name))
        rows.append({"recording": name, "subject": "01", "data": f"{name}.npy", "sfreq": sfreq,
                     "line_freq": 60.0, "duration_s": float(seconds), "source": f"{name}.edf"})
    sample = pd.DataFrame({"recording": [], "sample": []})
    result = detect(pd.DataFrame(rows), sample, tmp_path, Outliers(segment_s=4.0))
    short = result.decisions["short"]
    assert short["action"] == "drop_recording"
    assert "too short to scan (2.00 s < outliers.segment_s 4.0 s, from short.edf)" in short["flags"]["*"]
    assert {r: d["action"] for r, d in result.decisions.items() if r != "short"} == \
        dict.fromkeys(["long1", "long2", "long3"], "keep")


@pytest.mark.parametrize("n_samples", [50, 49])
def test_segments_too_short_for_line_bins_give_a_zero_ratio_not_a_crash(n_samples):
    """scan_files scans a clip shorter than outliers.segment_s whole. At 50 samples (500 Hz)
    its bins are 10 Hz apart: one sits on 60 Hz but none 2-6 Hz from it, so there is no
    floor; at 49 no bin lies within 0.5 Hz of 60 Hz, so there is no peak. Either way the
    ratio is 0 (nothing measured), and every other feature stands."""
    data = background(500.0, 20, 3)
    params = Outliers().model_copy(update={"segment_s": n_samples / 500})  # as scan_files
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        table = scan_array(data, 500.0, NAMES, 60.0, "r", params).table
    assert (table["line_ratio_db"] == 0).all()
    assert np.allclose(table["std"], 20e-6, rtol=0.1)
