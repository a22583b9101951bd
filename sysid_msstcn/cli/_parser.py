"""The argument parser and the entry point."""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ._common import _DEFAULT_MODELS, _MODELS, PROG, UsageError
from ._params import _add_estimator_flags
from .commands import (
    cmd_benchmark,
    cmd_demo,
    cmd_evaluate,
    cmd_fit,
    cmd_presets,
    cmd_sample,
    cmd_simulate,
)

_RUN_OPTIONS = [
    (
        "--device",
        {
            "default": "auto",
            "help": "auto (CUDA when available), cpu, cuda or cuda:N (default: auto)",
        },
    ),
    ("--seed", {"type": int, "default": 0, "help": "random seed (default: 0)"}),
    ("-q", "--quiet", {"action": "store_true", "help": "no progress output"}),
    (
        "--threads",
        {
            "type": int,
            "help": "CPU threads of PyTorch and of numpy's BLAS (default: their "
            "own choice; 1 is often faster on a busy machine)",
        },
    ),
]
_DATA_OPTIONS = [
    (
        "--data-dir",
        {
            "help": "folder of a named data set (default: in the shared "
            "data folder, $SYSID_MSSTCN_DATA)"
        },
    ),
    ("--max-records", {"type": int, "help": "use at most N records per split"}),
    ("--max-length", {"type": int, "help": "crop every record to N time steps"}),
    (
        "--warmup",
        {
            "type": int,
            "help": "warm-up samples of the test records (default: their n_init)",
        },
    ),
    (
        "--n-samples",
        {
            "type": int,
            "default": 3000,
            "help": "training samples of `synthetic` (default: 3000)",
        },
    ),
    (
        "--frame-width",
        {"type": int, "default": 200, "help": "speech frame width (default: 200)"},
    ),
    (
        "--cache-dir",
        {"help": "speech clip cache (default: ~/.cache/sysid_msstcn/blizzard)"},
    ),
]
_OUTPUT_HELP = "results file: .json, .csv or .nc"
_MC_HELP = (
    "Monte Carlo trajectories for the 90%% interval and CRPS (default: %(default)s)"
)


def _parent(data: bool = True, estimator: bool = False) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    groups = [("run options", _RUN_OPTIONS)]
    if data:
        groups.append(("data options", _DATA_OPTIONS))
    for title, specs in groups:
        group = parent.add_argument_group(title)
        for *flags, kwargs in specs:
            group.add_argument(*flags, **kwargs)
    if estimator:
        _add_estimator_flags(parent)
    return parent


def _positive_int(text: str) -> int:
    """An argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an int: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sysid-msstcn`` with all subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="MS-STCN for system identification: demo, training, "
        "evaluation, simulation, benchmarks and sampling.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    plain, with_est = _parent(), _parent(estimator=True)

    def add(func, help_, *parents, model=False, data=False):
        name = func.__name__[4:]
        p = sub.add_parser(name, help=help_, description=help_, parents=parents)
        p.set_defaults(func=func)
        if model:
            p.add_argument("model", metavar="MODEL", help="a saved .safetensors model")
        if data:
            p.add_argument("data", metavar="DATA", help="data set name or file")
        return p

    p = add(
        cmd_demo,
        "offline demo on a simulated nonlinear system",
        _parent(data=False, estimator=True),
    )
    p.add_argument(
        "--budget",
        type=float,
        default=1.0,
        help="scales data and training (default: 1, a few minutes on 2 CPU cores)",
    )
    p.add_argument(
        "--output", default="demo_output", help="folder (default: %(default)s)"
    )

    p = add(cmd_fit, "train MS-STCN on DATA and save it", with_est, data=True)
    p.add_argument(
        "--output",
        default="model.safetensors",
        help="model file (default: %(default)s)",
    )
    p.add_argument(
        "--ensemble",
        type=int,
        default=0,
        metavar="K",
        help="fit K members with seeds seed, seed + 1, ... and save them as one "
        "ensemble file (input/output data)",
    )
    p.add_argument(
        "--n-jobs",
        type=int,
        default=None,
        help="ensemble members fitted at once, in separate processes",
    )
    p.add_argument(
        "--keep-best",
        type=int,
        default=None,
        metavar="K",
        help="with --ensemble: keep the K members whose free runs of the "
        "training data are best",
    )
    p.add_argument(
        "--selection",
        choices=("best", "greedy"),
        default=None,
        help="with --ensemble: how members are kept; 'greedy' adds members one "
        "at a time while the mean of their training free runs improves (at "
        "most --keep-best of them)",
    )

    p = add(cmd_evaluate, "test metrics of a saved model", plain, model=True, data=True)
    p.add_argument("--mc-samples", type=int, default=0, help=_MC_HELP)
    p.add_argument(
        "--residual-lags",
        type=_positive_int,
        default=None,
        metavar="L",
        help="also run the residual correlation tests of the free runs up to lag "
        "L (input/output data): the Ljung-Box p-value (near 0 for any free run "
        "of a slow system) and the share of the input lags -L..L outside the "
        "99%% bound; with --plots, residuals.png",
    )
    p.add_argument("--output", help=_OUTPUT_HELP)

    p = add(
        cmd_simulate,
        "free-run simulation of a saved model",
        plain,
        model=True,
        data=True,
    )
    p.add_argument("--mc-samples", type=int, default=100, help=_MC_HELP)
    p.add_argument("--output", required=True, help=_OUTPUT_HELP)

    p = add(cmd_benchmark, "fit MS-STCN and the baselines on DATA", with_est, data=True)
    p.add_argument(
        "--models",
        default=",".join(_DEFAULT_MODELS),
        help=f"comma-separated, from {', '.join(_MODELS)} (msstcn+arx: MS-STCN "
        "on the residual of the ARX; greybox: the physical model, "
        "cascaded_tanks, emps and wiener_hammerstein); default %(default)s",
    )
    p.add_argument("--mc-samples", type=int, default=20, help=_MC_HELP)
    p.add_argument("--output", help=_OUTPUT_HELP)

    for p in (sub.choices["evaluate"], sub.choices["simulate"]):
        p.add_argument("--split", choices=("test", "train"), default="test")
    for p in (
        sub.choices["evaluate"],
        sub.choices["simulate"],
        sub.choices["benchmark"],
    ):
        p.add_argument("--plots", metavar="DIR", help="also write figures to DIR")

    p = add(
        cmd_sample,
        "generate handwriting (PNG) or speech (WAV)",
        _parent(data=False),
        model=True,
    )
    p.add_argument("--n", type=int, default=4, help="samples (default: 4)")
    p.add_argument("--length", type=int, default=400, help="time steps (default: 400)")
    p.add_argument("--kind", choices=("auto", "handwriting", "speech"), default="auto")
    p.add_argument("--sample-rate", type=int, default=16000, help="WAV rate (Hz)")
    p.add_argument("--output", default="samples", help="folder (default: samples)")

    add(cmd_presets, "print the preset table")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    status : int
        0 on success, 2 for a usage or data error (printed as one line
        ``sysid-msstcn: error: ...`` on stderr), 130 on Ctrl-C.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        # data-parallel training on large data sets (launch with torchrun);
        # its flags are those of ``python -m sysid_msstcn.distributed``
        from ..distributed import main as train_main

        try:
            return int(train_main(argv[1:]) or 0)
        except (ValueError, OSError, KeyError, ImportError) as exc:
            print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "threads", None) is not None:
            if args.threads < 1:
                raise UsageError(f"--threads must be >= 1, got {args.threads}")
            from .._utils import set_cpu_threads

            set_cpu_threads(args.threads)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, KeyError, ImportError) as exc:
        message = str(exc).strip().strip("'\"") or type(exc).__name__
        print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
        return 2
