"""params.yaml schema: valid configs load; typos, bad types and impossible combinations
fail with one line per problem; a stage exits 2 on bad params without a traceback."""
import copy

import pytest
import yaml

import stages.sample
from oddpipe.errors import ParamsError
from oddpipe.params import load_params, parse_params
from tests.conftest import REPO, default_params


def problems(**changes):
    """Problems reported for the default params with {section: {key: value}} merged in."""
    raw = copy.deepcopy(default_params())
    for section, values in changes.items():
        raw.setdefault(section, {}).update(values)
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    return info.value.problems


@pytest.mark.parametrize("path", ["params.yaml", "configs/muse_visual_p300.yaml"])
def test_shipped_configs_validate(path):
    params = load_params(REPO / path)
    assert params.filter.tmin < params.filter.tmax
    assert params.ingest.events.target and params.ingest.events.nontarget


def test_muse_config_reads_the_stim_channel():
    params = load_params(REPO / "configs/muse_visual_p300.yaml")
    assert params.ingest.event_source == "stim"
    assert params.ingest.stim_channel == "STI"
    assert [str(c) for c in params.ingest.events.target] == ["2"]
    assert [str(c) for c in params.ingest.events.nontarget] == ["1"]


def test_unknown_key_suggests_the_close_name():
    assert problems(filter={"h_frq": 30}) == [
        "params.yaml: unknown key 'filter.h_frq' (did you mean 'h_freq'?)"]


@pytest.mark.parametrize("changes, key, hint", [
    ({"filtr": {}}, "filtr", "filter"),
    ({"execution": {"n_jobz": 2}}, "execution.n_jobz", "n_jobs"),
    ({"ingest": {"events": {"target": ["target"], "nontarget": ["standard"],
                            "targt": ["x"]}}}, "ingest.events.targt", "target"),
])
def test_unknown_key_at_any_depth(changes, key, hint):
    found = problems(**changes)
    assert len(found) == 1
    assert f"unknown key '{key}'" in found[0]
    assert f"did you mean '{hint}'" in found[0]


def test_unknown_key_without_close_match_has_no_hint():
    found = problems(filter={"zzzzzz": 1})
    assert len(found) == 1 and "did you mean" not in found[0]


@pytest.mark.parametrize("tmin, tmax", [(0.5, 0.5), (0.9, 0.8)])
def test_tmin_not_below_tmax_fails(tmin, tmax):
    found = problems(filter={"tmin": tmin, "tmax": tmax})
    assert len(found) == 1
    assert f"tmin ({tmin}) must be below tmax ({tmax})" in found[0]


def test_each_problem_is_one_line():
    found = problems(filter={"h_frq": 30, "tmin": "soon"}, train={"lr": -1.0})
    assert len(found) == 3
    assert all("\n" not in line for line in found)
    assert sorted(line.split(":")[1].strip().split(" ")[0] for line in found) == [
        "filter.tmin", "train.lr", "unknown"]


def test_wrongly_typed_event_code_is_one_problem_one_line():
    # One bad value in a list[str | int] is one problem, whatever pydantic's union does.
    found = problems(ingest={"events": {"target": [{"a": 1}], "nontarget": ["standard"]}})
    assert len(found) == 1, found
    assert "ingest.events.target.0" in found[0]


def test_codes_in_both_classes_fail():
    found = problems(ingest={"events": {"target": [1, 2], "nontarget": ["2"]}})
    assert len(found) == 1 and "['2']" in found[0] and "both" in found[0]


def test_missing_raw_dir_is_named():
    raw = copy.deepcopy(default_params())
    del raw["ingest"]["raw_dir"]
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    assert info.value.problems == ["params.yaml: missing required key 'ingest.raw_dir'"]


def test_stage_exits_2_with_one_stderr_line_per_problem(tmp_path, capsys):
    raw = copy.deepcopy(default_params())
    raw["filter"]["h_frq"] = 30
    raw["train"]["lr"] = "fast"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    code = stages.sample.main(["--params", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert any("did you mean 'h_freq'" in line for line in lines)
    assert any("train.lr" in line for line in lines)
    assert "Traceback" not in err


def test_stage_exits_2_on_broken_yaml(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_text("filter: [unclosed\n")
    assert stages.sample.main(["--params", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("options, expected", [
    ({"*.cnt": {"data_format": ["int16"]}},
     "params.yaml: ingest.reader_options: ['*.cnt'].data_format: only scalars (text, number, "
     "true/false, null) are passed to readers; got ['int16']"),
    ({"*.cnt": {"data_format": {"a": 1}}},
     "params.yaml: ingest.reader_options: ['*.cnt'].data_format: only scalars (text, number, "
     "true/false, null) are passed to readers; got {'a': 1}"),
    ({"*.cnt": "int16"},
     "params.yaml: ingest.reader_options: ['*.cnt'] must be a mapping of reader keywords, "
     "e.g. {data_format: int16}; got 'int16'"),
    ({"*.cnt": {"preload": True}},
     "params.yaml: ingest.reader_options: ['*.cnt'].preload is chosen by ingest (it streams "
     "files); remove it"),
    (["*.cnt"],
     "params.yaml: ingest.reader_options: reader_options must map a glob pattern to reader "
     "keywords, e.g. {'*.cnt': {data_format: int16}}"),
])
def test_reader_options_take_scalars_only(options, expected):
    assert problems(ingest={"reader_options": options}) == [expected]


def test_reader_options_keep_their_order_and_values():
    raw = copy.deepcopy(default_params())
    raw["ingest"]["reader_options"] = {"a/*.cnt": {"data_format": "int32"},
                                       "*.cnt": {"data_format": "int16", "eog": None}}
    ingest = parse_params(raw).ingest
    assert list(ingest.reader_options.items()) == [
        ("a/*.cnt", {"data_format": "int32"}), ("*.cnt", {"data_format": "int16", "eog": None})]


@pytest.mark.parametrize("channels, expected", [
    ([], "params.yaml: ingest.channels: an empty list keeps nothing; list names or use common"),
    (["Fz", "Cz", "Fz"], "params.yaml: ingest.channels: ['Fz'] listed more than once"),
    ("all", "params.yaml: ingest.channels: 'all' is neither common nor a list of channel names"),
])
def test_channels_is_common_or_a_list_of_names(channels, expected):
    assert problems(ingest={"channels": channels}) == [expected]


def test_layout_is_files_or_bids():
    found = problems(ingest={"layout": "bidz"})
    assert len(found) == 1 and found[0].startswith("params.yaml: ingest.layout:")
    assert "'files' or 'bids'" in found[0]
    raw = copy.deepcopy(default_params())
    assert parse_params(raw).ingest.layout == "files"
    assert parse_params(raw).ingest.channels == "common"


def test_problems_name_the_params_file_given(tmp_path):
    raw = copy.deepcopy(default_params())
    raw["outliers"]["segment_s"] = 0.5  # below 1 s: 2-6 Hz neighbours need 1 Hz bins
    path = tmp_path / "exp-2.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert info.value.problems == [f"{path}: outliers.segment_s: Input should be greater "
                                   "than or equal to 1 (got 0.5)"]
