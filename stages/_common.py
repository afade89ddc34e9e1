"""What every stage shares: argument parsing, params loading, error reporting."""
from __future__ import annotations

import argparse
import logging
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from oddpipe import __version__
from oddpipe.errors import OddpipeError, ParamsError
from oddpipe.io import write_json
from oddpipe.params import Params, load_params


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    return p


def run_stage(name: str, body: Callable[[Params], None], params_path: Path) -> int:
    """Run a stage body; a user-facing problem prints one clear message, no traceback."""
    start = time.perf_counter()
    if threading.current_thread() is threading.main_thread():  # scratch folders are then
        signal.signal(signal.SIGTERM, _terminated)  # removed on SIGTERM as on Ctrl-C
    try:
        params = load_params(params_path)
        logging.basicConfig(level=params.execution.log_level,
                            format=f"{name}: %(message)s", force=True)
        quiet_mne()
        body(params)
        logging.getLogger(name).info("done in %.1f s, peak RSS %.0f MB",
                                     time.perf_counter() - start, peak_rss_mb())
    except ParamsError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 2
    except OddpipeError as exc:
        print(f"oddpipe {name}: error: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"oddpipe {name}: error: missing input {exc.filename}; run the stages before "
              f"this one first (dvc repro {name})", file=sys.stderr)
        return 1
    except OSError as exc:  # some (numpy's "not enough free space") carry no file name
        print(f"oddpipe {name}: error: cannot read or write {exc.filename or 'a file'} "
              f"({exc.strerror or exc}); check the path exists and is writable and its disk "
              "has space", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # its partial outputs are already removed
        print(f"oddpipe {name}: interrupted", file=sys.stderr)
        return 130
    return 0


def quiet_mne() -> None:
    """MNE's info lines off for this stage, its threads and its workers. Per-call
    verbose="error" is not enough with threads: MNE sets one process-wide level on entry
    and restores it on exit, so two threads interleaving restore each other's INFO. A
    level the user set in MNE_LOGGING_LEVEL stands."""
    if "MNE_LOGGING_LEVEL" not in os.environ:
        os.environ["MNE_LOGGING_LEVEL"] = "WARNING"  # read by `import mne` in workers
        logging.getLogger("mne").setLevel(logging.WARNING)  # mne.set_log_level's effect


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def peak_rss_mb() -> float:
    """The largest resident set of this process or any worker it waited for (Linux: KiB)."""
    return max(resource.getrusage(who).ru_maxrss
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024


def write_stage_record(out_dir: Path, stage: str, params: Params) -> None:
    """The params a stage used, beside its output, so a stale output can be detected."""
    section = getattr(params, stage).model_dump()
    write_json(out_dir / "stage.json",
               {"stage": stage, "params": section, "oddpipe_version": __version__})
