"""One typed schema for params.yaml: a section per stage, checked before any work.

Unknown keys, wrong types and impossible combinations fail with one line per problem
and a "did you mean" for typos.
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml

# oddpipe uses no pydantic plugin, and looking for them reads the metadata of every
# installed package: 11-21 ms of every stage's start (the outliers stage's imports take
# 0.20-0.26 s in all). A value the user set stands.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from oddpipe.errors import ParamsError


def check_range(name: str, pair: tuple[float, float], unit: str = "") -> None:
    low, high = pair
    if not 0 < low < high:
        raise ValueError(f"{name} must be [low, high]{unit} with 0 < low < high, got {list(pair)}")


class Section(BaseModel):
    # nan passes every bound (nan <= x is False both ways) and inf is no setting: refuse both
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Execution(Section):
    """Settings that never change a result; no stage lists them in dvc.yaml."""

    n_jobs: int = Field(1, ge=-1)  # -1: all cores; 0 has no meaning
    backend: Literal["loky", "threading", "sequential", "dask"] = "loky"
    scheduler: str | None = None  # dask: scheduler address (tcp://host:8786); None: local
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _jobs(self) -> "Execution":
        if self.n_jobs == 0:
            raise ValueError("n_jobs: 0 has no meaning; use 1 (serial), N cores, or -1 (all)")
        if self.scheduler and self.backend != "dask":
            raise ValueError(f"scheduler is set but backend is {self.backend}; "
                             "use backend: dask to run on that cluster")
        return self


class EventMap(Section):
    target: list[str | int] = Field(min_length=1)
    nontarget: list[str | int] = Field(min_length=1)

    @model_validator(mode="after")
    def _disjoint(self) -> "EventMap":
        both = {str(v) for v in self.target} & {str(v) for v in self.nontarget}
        if both:
            raise ValueError(f"codes {sorted(both)} are mapped to both target and nontarget")
        return self


ReaderScalar = str | int | float | bool | None
KEYWORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_reader_options(value: Any) -> Any:
    """reader_options: {glob: {keyword: scalar}}; the keywords go to the MNE reader as is."""
    if not isinstance(value, dict):
        raise ValueError("reader_options must map a glob pattern to reader keywords, e.g. "
                         "{'*.cnt': {data_format: int16}}")
    for glob, options in value.items():
        if not isinstance(options, dict):
            raise ValueError(f"['{glob}'] must be a mapping of reader keywords, "
                             f"e.g. {{data_format: int16}}; got {options!r}")
        for key, val in options.items():
            if not (isinstance(key, str) and KEYWORD.match(key)):
                raise ValueError(f"['{glob}']: {key!r} is not a keyword name")
            if key == "preload":
                raise ValueError(f"['{glob}'].preload is chosen by ingest "
                                 "(it streams files); remove it")
            if isinstance(val, (dict, list, tuple, set)):
                raise ValueError(f"['{glob}'].{key}: only scalars (text, number, "
                                 f"true/false, null) are passed to readers; got {val!r}")
    return value


class Ingest(Section):
    raw_dir: str
    layout: Literal["files", "bids"] = "files"  # bids: raw_dir is a BIDS root (mne-bids)
    pattern: str = "**/*.edf"  # files layout only
    path_regex: str = r"sub-(?P<subject>[A-Za-z0-9]+)"  # files layout only
    ch_types: list[Literal["eeg", "seeg", "ecog", "dbs"]] = Field(["eeg", "seeg", "ecog"],
                                                                  min_length=1)
    channels: Literal["common"] | list[str] = "common"  # or exactly these names, in order
    # glob (fnmatch on the path below raw_dir, first match wins) -> reader keywords
    reader_options: dict[str, dict[str, ReaderScalar]] = {}
    event_source: Literal["auto", "stim", "annotations", "tsv"] = "auto"
    stim_channel: str | None = None
    stim_mask: int | None = Field(None, ge=1)  # keep these bits of status words (e.g. 255)
    tsv_column: str = "trial_type"  # tsv source: <stem>_events.tsv column; else "value"
    events: EventMap
    sfreq: float | None = Field(None, gt=0)  # resample every file to this rate (anti-aliased)
    plausible_rms_v: tuple[float, float] = (1e-7, 1e-2)  # typical channel RMS, volts
    line_freq: float | Literal["auto"] = 60.0  # auto: 50 or 60 Hz per recording, or none
    on_error: Literal["fail", "skip"] = "skip"

    @model_validator(mode="after")
    def _rms_range(self) -> "Ingest":
        check_range("plausible_rms_v", self.plausible_rms_v, " volts")
        return self

    @field_validator("line_freq")
    @classmethod
    def _line_freq(cls, value: float | str) -> float | str:
        # 0 or below would silently turn the line-noise check and the notch off
        if value != "auto" and value <= 0:
            raise ValueError(f"{value} Hz is no line frequency; use 50, 60 or auto")
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        # pathlib refuses an empty or absolute glob with a traceback; '..' leaves raw_dir
        if not value or value.startswith("/") or ".." in Path(value).parts:
            raise ValueError(f"'{value}' must be a non-empty glob below raw_dir, "
                             "e.g. '**/*.edf'")
        return value

    @model_validator(mode="after")
    def _regex(self) -> "Ingest":
        try:
            compiled = re.compile(self.path_regex)
        except re.error as exc:
            raise ValueError(f"path_regex is not a valid regular expression ({exc})") from None
        if "subject" not in compiled.groupindex:
            raise ValueError("path_regex needs a named group 'subject', e.g. sub-(?P<subject>\\w+)")
        return self

    @field_validator("reader_options", mode="before")
    @classmethod
    def _reader_options(cls, value: Any) -> Any:
        return check_reader_options(value)

    @field_validator("channels", mode="before")
    @classmethod
    def _channels(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "common":
            raise ValueError(f"'{value}' is neither common nor a list of channel names")
        if isinstance(value, list):
            if not value:
                raise ValueError("an empty list keeps nothing; list names or use common")
            if any(isinstance(n, str) and not n.strip() for n in value):
                raise ValueError(f"{value} holds a blank name; list channel names")
            twice = sorted({str(n) for n in value if value.count(n) > 1})
            if twice:
                raise ValueError(f"{twice} listed more than once")
        return value


class Sample(Section):
    seed: int = 0
    inspect_fraction: float = Field(0.05, gt=0, le=1)
    inspect_min_per_stratum: int = Field(20, ge=1)
    group_by: Literal["recording", "subject"] = "recording"
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def _fractions(self) -> "Sample":
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 0.1 for training")
        return self


class Outliers(Section):
    # at least 1 s: the line-noise ratio compares bins 2-6 Hz away (1 Hz resolution or finer)
    segment_s: float = Field(4.0, ge=1.0)
    n_segments: int = Field(20, ge=1)
    line_excess_db: float = Field(12.0, gt=0)
    amp_z: float = Field(6.0, gt=0)
    flat_floor: float = Field(1e-9, ge=0)
    flat_rel: float = Field(0.01, ge=0, lt=1)
    amp_ceiling: float = Field(1e-2, gt=0)  # volts: a channel's std above it is no EEG/iEEG
    action: Literal["drop_channel", "drop_recording", "report_only"] = "drop_channel"
    max_bad_fraction: float = Field(0.5, gt=0, le=1)


class Filter(Section):
    notch: bool = True
    l_freq: float | None = Field(0.5, gt=0)
    h_freq: float | None = Field(20.0, gt=0)
    tmin: float = -0.2
    tmax: float = 0.8
    baseline: bool = True
    decim: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _window(self) -> "Filter":
        if self.tmin >= self.tmax:
            raise ValueError(f"tmin ({self.tmin}) must be below tmax ({self.tmax})")
        if self.l_freq and self.h_freq and self.l_freq >= self.h_freq:
            raise ValueError(f"l_freq ({self.l_freq}) must be below h_freq ({self.h_freq})")
        if self.decim > 1 and self.h_freq is None:
            raise ValueError("decimation without a low-pass aliases the data: set h_freq")
        if self.baseline and self.tmin >= 0:
            raise ValueError("baseline needs a pre-stimulus interval: set tmin < 0 or baseline: false")
        return self


class Normalize(Section):
    method: Literal["robust", "zscore", "none"] = "robust"


class Train(Section):
    model: Literal["cnn", "linear"] = "cnn"
    seed: int = 0
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-3, ge=0)
    batch_size: int = Field(64, ge=2)
    max_epochs: int = Field(30, ge=1)
    patience: int = Field(6, ge=1)
    imbalance: Literal["weighted_loss", "oversample", "none"] = "weighted_loss"
    early_stop_metric: Literal["auc", "balanced_accuracy"] = "auc"
    grad_clip: float = Field(1.0, gt=0)
    dropout: float = Field(0.25, ge=0, lt=1)
    input_check: Literal["fail", "warn"] = "fail"
    input_std_range: tuple[float, float] = (0.1, 10.0)
    input_max_abs: float = Field(1e3, gt=0)

    @model_validator(mode="after")
    def _range(self) -> "Train":
        check_range("input_std_range", self.input_std_range)
        return self


class Evaluate(Section):
    lda_bins: int = Field(16, ge=1)


class Params(Section):
    execution: Execution = Execution()
    ingest: Ingest
    sample: Sample = Sample()
    outliers: Outliers = Outliers()
    filter: Filter = Filter()
    normalize: Normalize = Normalize()
    train: Train = Train()
    evaluate: Evaluate = Evaluate()

    @model_validator(mode="after")
    def _ingest_rate(self) -> "Params":
        """A set ingest.sfreq is known now: check the filter against it before any work."""
        sfreq, f = self.ingest.sfreq, self.filter
        if sfreq is None:
            return self  # the files' own rate: the filter stage checks it
        if f.l_freq is not None and f.l_freq >= sfreq / 2:
            raise ValueError(f"filter.l_freq ({f.l_freq} Hz) is at or above the Nyquist "
                             f"frequency of ingest.sfreq ({sfreq} Hz); lower l_freq")
        if f.h_freq is not None and f.h_freq >= sfreq / f.decim / 2:
            raise ValueError(f"filter.h_freq ({f.h_freq} Hz) is at or above the Nyquist "
                             f"frequency after decimation ({sfreq / f.decim / 2} Hz at "
                             f"ingest.sfreq {sfreq} Hz / decim {f.decim}); raise ingest.sfreq, "
                             "lower h_freq or filter.decim")
        return self


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names valid at the location of an unknown key, for 'did you mean'."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def _describe(err: dict[str, Any], source: str = "params.yaml") -> str:
    loc = tuple(p for p in err["loc"])
    where = ".".join(str(p) for p in loc) or "params"
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _allowed_keys(Params, loc), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{source}: unknown key '{where}'{hint}"
    if err["type"] == "missing":
        return f"{source}: missing required key '{where}'"
    if err["type"] == "value_error":  # a cross-field rule: the message says it all
        msg = err["msg"].removeprefix("Value error, ")
        return f"{source}: {where}: {msg}" if loc else f"{source}: {msg}"
    return f"{source}: {where}: {err['msg']} (got {err.get('input')!r})"


UNION_TAG = re.compile(r"^(str|int|float|bool|none|literal\[.*\]|list\[.*\]|dict\[.*\])$")


def _one_per_problem(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A value that fits no member of a union (str | int) is one problem, not one per member."""
    merged: dict[tuple, dict[str, Any]] = {}
    for err in errors:
        loc = tuple(err["loc"])
        if loc and isinstance(loc[-1], str) and UNION_TAG.match(loc[-1]):
            tag, loc = loc[-1], loc[:-1]
            if loc in merged:
                merged[loc]["msg"] += f" or {tag}"
                continue
            err = {**err, "loc": loc, "msg": f"expected {tag}"}
        merged.setdefault(loc, err)
    return list(merged.values())


def parse_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate a params mapping; raise ParamsError with one line per problem, each
    naming the source file."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError([_describe(e, source) for e in _one_per_problem(exc.errors())]
                          ) from None


def load_params(path: Path) -> Params:
    """Read and validate params.yaml (yaml.safe_load only)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ParamsError([f"{path}: cannot read the params file ({exc.strerror}); "
                           "pass an existing file with --params"]) from None
    except UnicodeDecodeError as exc:
        raise ParamsError([f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8"]
                          ) from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ParamsError([f"{path}: not valid YAML{where} ({problem}); fix the syntax"]) from None
    if not isinstance(raw, dict):
        raise ParamsError([f"{path}: expected a mapping of sections, got {type(raw).__name__}"])
    return parse_params(raw, str(path))
