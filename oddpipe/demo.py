"""The built-in demo dataset: seeded synthetic oddball recordings written as EDF.

The data tell the story oddpipe exists for: 7.6 % targets, a P300 that is learnable
but not trivial, a little 60 Hz everywhere, and in two runs of one subject a few
"detached" electrodes carrying 60 Hz and harmonics 10^3-10^5 times the brain signal.
The ground truth goes to a sidecar the pipeline never reads.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mne
import numpy as np

SHAFTS = ("LA", "LH", "RA", "RH")
TARGET, NONTARGET = "target", "standard"


@dataclass(frozen=True)
class DemoSpec:
    n_subjects: int = 5
    n_runs: int = 4
    duration_s: float = 360.0
    sfreq: float = 500.0
    contacts_per_shaft: int = 4
    target_fraction: float = 0.076
    soa_s: float = 1.0
    jitter_s: float = 0.2
    background_uv: float = 20.0
    line_uv: float = 0.5
    line_freq: float = 60.0
    p300_uv: float = 10.0
    seed: int = 42
    # (subject index, run index) -> contaminated channel names: the story's two files.
    contaminated: dict[str, list[str]] = field(
        default_factory=lambda: {
            "sub-03_run-02": ["RH3", "RH4"],
            "sub-03_run-03": ["LA2", "RH3", "RH4"],
        }
    )

    @property
    def ch_names(self) -> list[str]:
        return [f"{s}{i}" for s in SHAFTS for i in range(1, self.contacts_per_shaft + 1)]


def pink_noise(rng: np.random.Generator, n_ch: int, n_times: int) -> np.ndarray:
    """Unit-RMS 1/f noise per channel, shaped in the frequency domain."""
    spec = rng.standard_normal((n_ch, n_times // 2 + 1)) + 1j * rng.standard_normal(
        (n_ch, n_times // 2 + 1)
    )
    freqs = np.arange(n_times // 2 + 1, dtype=float)
    freqs[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(freqs), n=n_times, axis=1)
    return x / x.std(axis=1, keepdims=True)


def stimulus_onsets(rng: np.random.Generator, spec: DemoSpec) -> np.ndarray:
    """Onset times (s): one stimulus about every SOA, with uniform jitter."""
    onsets, t = [], 2.0
    while t < spec.duration_s - 2.0:
        onsets.append(t)
        t += spec.soa_s + rng.uniform(-spec.jitter_s, spec.jitter_s)
    return np.asarray(onsets)


def choose_targets(rng: np.random.Generator, n: int, fraction: float) -> np.ndarray:
    """Exactly round(fraction * n) targets, never two in a row (an oddball sequence)."""
    n_targets = int(round(fraction * n))
    slots = rng.choice(np.arange(1, n // 2), size=n_targets, replace=False) * 2
    is_target = np.zeros(n, dtype=bool)
    is_target[slots - rng.integers(0, 2, size=n_targets)] = True
    return is_target


def erp_waveforms(spec: DemoSpec) -> tuple[np.ndarray, np.ndarray]:
    """Time axis (s) of the response window and a unit P300 shape on it."""
    t = np.arange(0, 0.8, 1 / spec.sfreq)
    return t, np.exp(-0.5 * ((t - 0.35) / 0.08) ** 2)


def topography(rng: np.random.Generator, spec: DemoSpec) -> np.ndarray:
    """Per-channel P300 weight: strongest on the hippocampal shafts, as in iEEG."""
    weights = np.array(
        [1.0 if name[:2] in ("LH", "RH") else 0.3 for name in spec.ch_names]
    )
    return weights * rng.uniform(0.7, 1.3, size=len(weights))


def add_responses(
    data: np.ndarray, rng: np.random.Generator, spec: DemoSpec,
    onsets: np.ndarray, is_target: np.ndarray, topo: np.ndarray,
) -> None:
    """Add an N1-like response to every stimulus and a jittered P300 to targets."""
    t, p300 = erp_waveforms(spec)
    n1 = -np.exp(-0.5 * ((t - 0.12) / 0.03) ** 2)
    for onset, target in zip(onsets, is_target):
        start = int(round(onset * spec.sfreq))
        stop = min(start + len(t), data.shape[1])
        response = 2.0 * np.outer(np.full(len(topo), 0.5), n1)
        if target:
            shift = int(round(rng.normal(0, 0.03) * spec.sfreq))
            amp = spec.p300_uv * rng.lognormal(0, 0.3)
            response = response + amp * np.outer(topo, np.roll(p300, shift))
        data[:, start:stop] += response[:, : stop - start]


def line_noise(spec: DemoSpec, n_times: int, amp: np.ndarray, rng: np.random.Generator,
               harmonic_gain: float = 0.0) -> np.ndarray:
    """Line frequency with (optionally) its harmonics below Nyquist, per channel."""
    t = np.arange(n_times) / spec.sfreq
    out = np.zeros((len(amp), n_times))
    harmonics = np.arange(spec.line_freq, spec.sfreq / 2, spec.line_freq)
    for k, f in enumerate(harmonics):
        gain = 1.0 if k == 0 else harmonic_gain / k
        if gain == 0:
            continue
        phase = rng.uniform(0, 2 * np.pi, size=(len(amp), 1))
        out += gain * amp[:, None] * np.sin(2 * np.pi * f * t + phase)
    return out


def simulate_run(spec: DemoSpec, subject: int, run: int) -> tuple[mne.io.RawArray, list[str]]:
    """One recording in volts with its annotations, and its contaminated channels."""
    rng = np.random.default_rng([spec.seed, subject, run])
    topo = topography(np.random.default_rng([spec.seed, subject]), spec)
    n_ch, n_times = len(spec.ch_names), int(spec.duration_s * spec.sfreq)
    gains = rng.uniform(0.8, 1.2, size=(n_ch, 1))
    common = pink_noise(rng, 1, n_times)
    data = spec.background_uv * gains * (0.8 * pink_noise(rng, n_ch, n_times) + 0.6 * common)
    data += line_noise(spec, n_times, np.full(n_ch, spec.line_uv), rng)
    onsets = stimulus_onsets(rng, spec)
    is_target = choose_targets(rng, len(onsets), spec.target_fraction)
    add_responses(data, rng, spec, onsets, is_target, topo)
    bad = spec.contaminated.get(f"sub-{subject:02d}_run-{run:02d}", [])
    for name in bad:  # a detached contact: no brain signal, huge mains with harmonics
        idx = spec.ch_names.index(name)
        amp = spec.background_uv * 10 ** rng.uniform(3.3, 4.7, size=1)
        data[idx] = 0.05 * data[idx] + line_noise(spec, n_times, amp, rng, harmonic_gain=0.4)[0]
    info = mne.create_info(spec.ch_names, spec.sfreq, ch_types="eeg")
    raw = mne.io.RawArray(data * 1e-6, info, verbose="error")
    meas_date = (dt.datetime(2020, 1, 1, 9, 0, tzinfo=dt.timezone.utc)  # any number of subjects
                 + dt.timedelta(days=subject - 1, hours=run))
    raw.set_meas_date(meas_date)
    labels = np.where(is_target, TARGET, NONTARGET)
    raw.set_annotations(mne.Annotations(onsets, 0.0, labels, orig_time=meas_date))
    return raw, bad


def generate(out_dir: Path, truth_path: Path, spec: DemoSpec = DemoSpec()) -> list[Path]:
    """Write every demo recording as EDF under out_dir, and the ground truth as JSON."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written, contaminated = [], {}
    for subject in range(1, spec.n_subjects + 1):
        for run in range(1, spec.n_runs + 1):
            raw, bad = simulate_run(spec, subject, run)
            name = f"sub-{subject:02d}_task-oddball_run-{run:02d}_ieeg"
            path = out_dir / f"sub-{subject:02d}" / f"{name}.edf"
            path.parent.mkdir(parents=True, exist_ok=True)
            mne.export.export_raw(path, raw, fmt="edf", physical_range="channelwise",
                                  overwrite=True, verbose="error")
            written.append(path)
            if bad:
                contaminated[name] = bad
    truth = {"spec": {k: v for k, v in asdict(spec).items()}, "contaminated": contaminated}
    truth_path.write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n")
    return written
