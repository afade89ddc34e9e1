"""Outlier detection: on the demo exactly the contaminated electrodes are flagged; flat,
DC-offset, low-rate and too-short recordings behave."""
import mne
import numpy as np
import pandas as pd
import pytest

from oddpipe.errors import OddpipeError
from oddpipe.io import read_columns, read_json, read_tsv
from oddpipe.outliers import (detect, flag_channels, load_evidence, scan_recording, scan_starts,
                              segment_features)
from oddpipe.params import Outliers
from tests.conftest import SMALL_SPEC, make_params, write_params
from tests.pipeline import run_stages

CHANNELS = [f"E{i}" for i in range(1, 9)]
FEATURES = ["n_nonfinite", "std", "ptp", "log_std", "line_ratio_db",
            "line_ratio_fundamental_db"]


# ---- the story on the demo ---------------------------------------------------------

@pytest.fixture(scope="module")
def demo_outliers(small_demo, tmp_path_factory):
    work = tmp_path_factory.mktemp("outliers_stage")
    params = write_params(work / "params.yaml", make_params(small_demo["raw_dir"]))
    codes = run_stages(work, params, names=("ingest", "sample", "outliers", "outliers_report"))
    return codes, work


def test_demo_flags_exactly_the_contaminated_channels(small_demo, demo_outliers):
    codes, work = demo_outliers
    assert codes == {"ingest": 0, "sample": 0, "outliers": 0, "outliers_report": 0}
    truth = {(rec, ch) for rec, chans in small_demo["truth"]["contaminated"].items()
             for ch in chans}
    assert len(truth) == 5
    flags = read_tsv(work / "data/outliers/outliers.tsv")
    n_rec = SMALL_SPEC.n_subjects * SMALL_SPEC.n_runs
    assert len(flags) == n_rec * len(SMALL_SPEC.ch_names)
    flagged = set(zip(flags.loc[flags["flagged"], "recording"],
                      flags.loc[flags["flagged"], "channel"]))
    assert flagged == truth
    assert all("line noise" in r for r in flags.loc[flags["flagged"], "reasons"])
    numeric = flags[FEATURES + ["rel_std", "z_within", "line_excess_db"]].to_numpy(float)
    assert np.isfinite(numeric).all()


def test_demo_decisions_and_metrics(small_demo, demo_outliers):
    _, work = demo_outliers
    decisions = read_json(work / "data/outliers/outliers.json")["recordings"]
    contaminated = small_demo["truth"]["contaminated"]
    assert len(decisions) == SMALL_SPEC.n_subjects * SMALL_SPEC.n_runs
    for rec, d in decisions.items():
        if rec in contaminated:
            assert d["action"] == "drop_channels"
            assert sorted(d["drop_channels"]) == sorted(contaminated[rec])
            assert sorted(d["flags"]) == sorted(contaminated[rec])
        else:
            assert (d["action"], d["drop_channels"], d["flags"]) == ("keep", [], {})
    metrics = read_json(work / "metrics/outliers.json")
    assert metrics["n_flagged_channels"] == 5
    assert metrics["n_flagged_recordings"] == 2
    assert metrics["n_dropped_channels"] == 5 and metrics["n_dropped_recordings"] == 0
    # the story's check on the inspection sample finds the same electrodes, no others
    assert metrics["sample_found_of_scan_flags"] == 5
    assert metrics["sample_extra_flags"] == 0
    assert metrics["sample_recordings_covered"] == 9
    assert (work / "reports/outliers.html").stat().st_size > 0


def test_channel_psds_kept_only_for_flagged_recordings(small_demo, demo_outliers):
    """Memory grows with what is flagged: the stage keeps every recording's median PSD and
    the channels' PSDs of the flagged recordings alone; the evidence shows the line peak."""
    _, work = demo_outliers
    params = make_params(small_demo["raw_dir"]).outliers
    result = detect(read_columns(work / "data/ingest/recordings.tsv"),
                    read_columns(work / "data/sample/sample.tsv"), work / "data/ingest", params)
    contaminated = small_demo["truth"]["contaminated"]
    assert {r for r, f in result.scans.items() if f.psd is not None} == set(contaminated)
    assert all(f.median_psd.shape == f.freqs.shape for f in result.scans.values())
    evidence = load_evidence(work / "data/outliers/evidence.npz")
    for rec in result.scans:
        bad = evidence[f"{rec}|flagged_psd"]
        assert bad.shape == (len(contaminated.get(rec, [])), len(evidence[f"{rec}|freqs"]))
        assert sorted(evidence[f"{rec}|flagged_channels"]) == sorted(contaminated.get(rec, []))
    rec = sorted(contaminated)[0]
    at_60 = np.argmin(np.abs(evidence[f"{rec}|freqs"] - 60.0))
    median = evidence[f"{rec}|median_psd"][at_60]
    assert (evidence[f"{rec}|flagged_psd"][:, at_60] > 100 * median).all()  # > 20 dB


# ---- unit edge cases ---------------------------------------------------------------

def write_fif(path, data_uv, sfreq=250.0, names=CHANNELS):
    info = mne.create_info(list(names), sfreq, "eeg")
    mne.io.RawArray(data_uv * 1e-6, info, verbose="error").save(path, verbose="error")
    return str(path)


def noise_uv(n_times, seed, n_ch=len(CHANNELS), sd=20.0):
    return np.random.default_rng(seed).standard_normal((n_ch, n_times)) * sd


def flags_for(fifs, line_freq=60.0, params=Outliers(), subject="01"):
    """Scan each FIF and flag the pooled table, as detect() does for the scan."""
    tables = []
    for i, fif in enumerate(fifs):
        feats = scan_recording(fif, f"rec{i}", line_freq, params)
        tables.append(feats.table.assign(recording=f"rec{i}", subject=subject))
    return flag_channels(pd.concat(tables, ignore_index=True), params)


def test_flat_channel_flagged_flat_and_features_finite(tmp_path):
    data = noise_uv(60 * 250, seed=0)
    data[3] = 0.0                      # flat (a dead amplifier channel)
    data[5, :10] = np.nan              # NaN samples on another channel (first segment)
    fif = write_fif(tmp_path / "a_raw.fif", data)
    flags = flags_for([fif])
    by_ch = flags.set_index("channel")
    assert by_ch.loc["E4", "reasons"].startswith("flat")
    assert by_ch.loc["E6", "reasons"] == "10 non-finite samples"
    assert sorted(flags.loc[flags["flagged"], "channel"]) == ["E4", "E6"]
    assert np.isfinite(flags[FEATURES + ["rel_std", "z_within", "line_excess_db"]]
                       .to_numpy(float)).all()
    assert by_ch.loc["E4", "line_ratio_db"] == 0.0


def test_nan_samples_flagged_as_nonfinite(tmp_path):
    data = noise_uv(60 * 250, seed=0)
    data[5, 1000:1010] = np.nan
    fif = write_fif(tmp_path / "a_raw.fif", data)
    params = Outliers(n_segments=60, segment_s=1.0)  # every second is scanned
    flags = flags_for([fif], params=params).set_index("channel")
    assert flags.loc["E6", "n_nonfinite"] == 10
    assert flags.loc["E6", "reasons"] == "10 non-finite samples"
    assert np.isfinite(flags.loc["E6", FEATURES].to_numpy(float)).all()


def test_large_dc_offset_is_not_flagged(tmp_path):
    fifs = []
    for r in range(3):  # three recordings, so the cross-recording check is on too
        data = noise_uv(60 * 250, seed=r)
        if r == 1:
            data[2] += 1e5  # +100 mV DC on one electrode: 5000x the signal's std
        fifs.append(write_fif(tmp_path / f"r{r}_raw.fif", data))
    flags = flags_for(fifs)
    assert flags["z_cross"].notna().all()
    assert not flags["flagged"].any(), flags.loc[flags["flagged"], ["recording", "channel",
                                                                    "reasons"]]
    offset = flags[(flags["recording"] == "rec1") & (flags["channel"] == "E3")].iloc[0]
    assert offset["std"] == pytest.approx(20e-6, rel=0.1)


def test_amplitude_outlier_flagged_moderate_one_not(tmp_path):
    data = noise_uv(60 * 250, seed=0)
    data[1] *= 10.0  # log10 std +1.0: z = 1.0 / 0.1 (the MAD floor) = 10 > amp_z 6
    data[4] *= 3.0   # log10 std +0.48: z ~ 4.8 < 6
    flags = flags_for([write_fif(tmp_path / "a_raw.fif", data)]).set_index("channel")
    assert flags.index[flags["flagged"]].tolist() == ["E2"]
    assert flags.loc["E2", "reasons"].startswith("amplitude z")
    assert flags.loc["E2", "z_within"] == pytest.approx(10.0, abs=0.5)
    assert flags.loc["E5", "z_within"] == pytest.approx(4.8, abs=0.5)


def test_line_noise_channel_flagged_among_clean_ones(tmp_path):
    data = noise_uv(60 * 250, seed=0)
    t = np.arange(data.shape[1]) / 250.0
    data[6] += 200.0 * np.sin(2 * np.pi * 60 * t)
    flags = flags_for([write_fif(tmp_path / "a_raw.fif", data)]).set_index("channel")
    assert flags.index[flags["flagged"]].tolist() == ["E7"]
    assert "line noise" in flags.loc["E7", "reasons"]


@pytest.mark.parametrize("sfreq", [120.0, 64.0])
def test_unobservable_line_frequency_gives_zero_ratio(tmp_path, sfreq):
    # 60 Hz sits at Nyquist (120 Hz) or aliases to 4 Hz (64 Hz): nothing to measure.
    fif = write_fif(tmp_path / "slow_raw.fif", noise_uv(int(30 * sfreq), seed=1), sfreq=sfreq)
    feats = scan_recording(fif, "slow", 60.0, Outliers())
    assert (feats.table["line_ratio_db"] == 0).all()
    assert (feats.table["line_ratio_fundamental_db"] == 0).all()
    assert np.isfinite(feats.table[FEATURES].to_numpy(float)).all()
    segs = noise_uv(int(2 * sfreq), seed=2)[None].repeat(3, axis=0)
    table = segment_features(segs, sfreq, 60.0, CHANNELS)[0]
    assert (table["line_ratio_db"] == 0).all()


def test_60hz_line_at_100hz_sampling_does_not_crash(tmp_path):
    # No harmonic of 60 Hz lies below Nyquist (50 Hz): the scan must still work and
    # report no line noise on clean data (at most noise-level ratios, should the 40 Hz
    # alias be checked).
    fif = write_fif(tmp_path / "slow_raw.fif", noise_uv(30 * 100, seed=1), sfreq=100.0)
    feats = scan_recording(fif, "slow", 60.0, Outliers())
    assert np.isfinite(feats.table[FEATURES].to_numpy(float)).all()
    assert (feats.table["line_ratio_db"].abs() < 6.0).all()
    flags = flag_channels(feats.table.assign(recording="slow", subject="01"), Outliers())
    assert not flags["flagged"].any()


def test_recording_shorter_than_a_segment_raises(tmp_path):
    fif = write_fif(tmp_path / "short_raw.fif", noise_uv(250, seed=0))  # 1 s
    with pytest.raises(OddpipeError) as info:
        scan_recording(fif, "short", 60.0, Outliers(segment_s=2.0))
    msg = str(info.value)
    assert "250 samples, shorter than one analysis segment (500)" in msg
    assert "outliers.segment_s" in msg


def test_scan_starts_cover_the_recording():
    starts = scan_starts(10_000, 500, 20)
    assert len(starts) == 20 and starts[0] == 0 and starts[-1] == 9_500
    assert (np.diff(starts) > 0).all()
    with pytest.raises(OddpipeError, match="shorter than one analysis segment"):
        scan_starts(499, 500, 20)
