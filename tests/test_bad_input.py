"""Bad input, found by attacking the ingest, outliers and filter stages: each gets one
clear message naming the file, the problem and the fix (exit 1 for data, 2 for params),
never a traceback, and one bad file never loses the others' work."""
from __future__ import annotations

import copy

import pytest
import yaml

import stages.ingest
from oddpipe.errors import ParamsError
from oddpipe.params import parse_params
from tests.conftest import default_params


def problems(**changes) -> list[str]:
    raw = copy.deepcopy(default_params())
    for section, values in changes.items():
        raw.setdefault(section, {}).update(values)
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    return info.value.problems


# ---- params ------------------------------------------------------------------------

def test_params_file_not_utf8_exits_2_without_traceback(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"ingest:\n  raw_dir: \xff\xfe\n")
    assert stages.ingest.main(["--params", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "UTF-8" in err and str(path) in err


@pytest.mark.parametrize("section, key", [("filter", "tmin"), ("filter", "h_freq"),
                                          ("outliers", "segment_s"), ("ingest", "sfreq")])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_in_params_is_a_problem(section, key, value):
    found = problems(**{section: {key: value}})
    assert len(found) == 1 and f"{section}.{key}" in found[0], found


@pytest.mark.parametrize("value", [[1.0, 1e-9], [-1, 0], [0, 1e-2]])
def test_plausible_rms_range_must_be_ordered_and_positive(value):
    found = problems(ingest={"plausible_rms_v": value})
    assert len(found) == 1 and "plausible_rms_v" in found[0], found


@pytest.mark.parametrize("value", [0, -60])
def test_line_freq_must_be_positive(value):
    found = problems(ingest={"line_freq": value})
    assert len(found) == 1 and "ingest.line_freq" in found[0], found


@pytest.mark.parametrize("pattern", ["", "/etc/*", "../*.edf"])
def test_pattern_must_be_a_non_empty_glob_below_raw_dir(pattern):
    found = problems(ingest={"pattern": pattern})
    assert len(found) == 1 and "pattern" in found[0], found


def test_blank_channel_names_are_a_problem():
    found = problems(ingest={"channels": [" ", "Cz"]})
    assert len(found) == 1 and "ingest.channels" in found[0], found


@pytest.mark.parametrize("sfreq, filt, word", [
    (1e-9, {}, "l_freq"),
    (100.0, {"h_freq": 30.0, "decim": 2}, "h_freq"),   # Nyquist after decim: 25 Hz
    (100.0, {"h_freq": None, "l_freq": 60.0, "decim": 1}, "l_freq"),
])
def test_ingest_sfreq_checked_against_the_filter_before_any_work(sfreq, filt, word):
    found = problems(ingest={"sfreq": sfreq}, filter=filt)
    assert len(found) == 1 and word in found[0] and "ingest.sfreq" in found[0], found


def test_ingest_sfreq_that_fits_the_filter_passes():
    raw = copy.deepcopy(default_params())
    raw["ingest"]["sfreq"] = 250.0
    parse_params(raw)
