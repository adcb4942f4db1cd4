"""Command-line plumbing: one-line errors for bad overrides and bad input, never a traceback."""

import functools
import os
import re
import signal
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, open_dict
from omegaconf.errors import OmegaConfBaseException

from robustlab.errors import RobustlabError
from robustlab.tasks import Stopped

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    """``configs/<name>.yaml`` composed with ``overrides`` as ``python <name>.py`` would, for in-process runs
    (tests, benchmarks, notebooks); ``paths.output_dir`` must be among the overrides."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def fail(message: str) -> None:
    """Print ``error: message`` as one line on stderr and exit with status 2."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


def describe_config_error(err: Exception, script: str) -> str:
    """Turn a Hydra/OmegaConf composition error into 'problem; fix: ...'."""
    text = str(err)
    missing = re.search(r"Could not find '([\w/]+)/([^/']+)'", text) or re.search(r"'([\w/]+)/([^/']+)'", text)
    if isinstance(err, MissingConfigException) and missing:
        group, option = missing[1], missing[2]
        listed = re.search(r"Available options in '[\w/]+':\n((?:\t.*\n?)+)", text)
        options = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml")) or (listed[1].split() if listed else [])
        if options:
            choices = ", ".join(options)
            return f"unknown {group} option {option!r}; fix: choose one of {choices}, e.g. {group}={options[0]}"
    cause = err.__cause__ if err.__cause__ is not None else err
    first = str(err).strip().splitlines()[0]
    if isinstance(cause, OmegaConfBaseException) and "not in struct" in str(cause):
        key = getattr(cause, "full_key", "") or first
        return (
            f"unknown config key {key!r}; fix: check its spelling against "
            f"`python {script} --cfg job`, or add a new key with a leading '+'"
        )
    return f"{first}; fix: see `python {script} --help` for the available groups and keys"


def sweep_variants(overrides: list[str]) -> list[list[str]]:
    """The single-run override lists that check a multirun's ``overrides``: every value of every sweep
    (``ckpt=A,B``, ``seed=range(0,3)``) once, the other sweeps at their first value."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    first = [
        f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" if o.is_sweep_override() else o.input_line
        for o in parsed
    ]
    variants = [first]
    for i, o in enumerate(parsed):
        if o.is_sweep_override():
            variants += [
                [*first[:i], f"{o.get_key_element()}={v}", *first[i + 1 :]] for v in list(o.sweep_string_iterator())[1:]
            ]
    return variants


#: Hydra's command-line flags that take the next argument as their value (``--cfg hydra``, ``-cn train``).
VALUED_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"}
INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def _overrides(argv: list[str]) -> list[str]:
    """The overrides among ``argv``: every argument but Hydra's flags and their values."""
    args, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg.startswith("-"):
            topic = argv[i + 1] if i + 1 < len(argv) else None
            skip = arg in VALUED_FLAGS or (arg in ("--info", "-i") and topic in INFO_TOPICS)
        else:
            args.append(arg)
    return args


def check_overrides(config_name: str, argv: list[str] | None = None) -> None:
    """Compose the config with the command-line overrides (each job's, for a ``-m`` multirun); exit with one
    line if it fails."""
    argv = sys.argv[1:] if argv is None else argv
    args = _overrides(argv)
    overrides = [a for a in args if not a.startswith("hydra.") and not a.startswith("hydra/")]
    multirun = bool({"-m", "--multirun"} & set(argv))
    try:
        runs = sweep_variants(overrides) if multirun else [overrides]
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            for run in runs:
                compose(config_name=config_name, overrides=run)
            hydra_overrides = [a for a in args if a.startswith(("hydra.", "hydra/"))]
            hydra = compose(config_name=config_name, overrides=[*runs[0], *hydra_overrides], return_hydra_config=True)
            output = Path(hydra.hydra.sweep.dir if multirun else hydra.hydra.run.dir)
    except (HydraException, OmegaConfBaseException) as err:
        fail(describe_config_error(err, Path(sys.argv[0]).name))
    problem = unwritable(output)
    if problem:
        fail(f"cannot write the run directory {output} ({problem}); fix: choose a writable one with hydra.run.dir=...")


def unwritable(directory: Path) -> str | None:
    """Why ``directory`` could not be created and written to, or None; tried in its nearest existing ancestor with
    a temporary folder that is removed again, so nothing is left behind."""
    ancestor = directory.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is not a directory"
    try:
        os.rmdir(tempfile.mkdtemp(dir=ancestor, prefix=".robustlab-check-"))
    except OSError as err:
        return err.strerror or str(err)
    return None


def robustlab_cause(err: BaseException | None) -> RobustlabError | None:
    """The :class:`RobustlabError` behind ``err``, also when Hydra or OmegaConf wrapped it."""
    while err is not None:
        if isinstance(err, RobustlabError):
            return err
        err = err.__cause__ or err.__context__
    return None


def one_line_errors(task):
    """Decorate a task so that a :class:`RobustlabError`, even a wrapped one, ends the program
    with one line."""

    @functools.wraps(task)
    def wrapper(*args, **kwargs):
        try:
            return task(*args, **kwargs)
        except (Stopped, SIGTERMException) as stop:  # Lightning's own, when SIGTERM came between two checks
            signum = getattr(stop, "signum", signal.SIGTERM)
            print(
                f"stopped: received {signal.Signals(signum).name}; outputs already written are kept; "
                "rerun the same command with resume=true to continue (evaluation: from the last journaled batch; "
                "training: from the last saved checkpoint)",
                file=sys.stderr,
            )
            sys.exit(128 + signum)
        except Exception as err:
            cause = robustlab_cause(err)
            if cause is None:
                raise
            fail(str(cause))

    return wrapper
