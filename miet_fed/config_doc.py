"""`miet-fed config`: every config key with its default, valid values and help, and the effective
config of a command line, before anything runs; also the README's config reference.

`miet-fed config simulate configs/simulate.toml --strategy fedavg` takes the same arguments as
`miet-fed simulate` and prints the config that command would run, as a commented TOML file (so it
can be saved and passed back). The listing and the README table both come from
`miet_fed.config.describe`, so they cannot drift from the dataclasses.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from miet_fed.errors import MietError
from miet_fed.markdown import table

HELP = "list every config key (default, valid values, help) and the effective config of a command"
BEGIN = "<!-- config-reference:begin (generated: miet-fed config reference --write README.md) -->"
END = "<!-- config-reference:end -->"
#: The keys of a sweep file (`miet-fed sweep`), documented like the config keys.
SWEEP_KEYS = [
    ("sweep.name", "the file's name", "a folder name", "the sweep folder: results/<name>"),
    ("sweep.command", "(required)", "tune, simulate", "the command every point runs"),
    ("sweep.base", "built-in defaults", "PATH.toml", "the config file every point starts from"),
    ("sweep.seeds", "[]", "a list of integers", "shorthand for a run.seed grid axis"),
    ("sweep.description", "''", "text", "shown at the top of the report"),
    ("[set]", "{}", "'section.key' = value", "fixed for every point (as --set)"),
    ("[grid]", "{}", "'section.key' = [v1, v2, ...]", "varied: the cartesian product"),
    ("[[point]]", "[]", "tables of 'section.key' = value", "explicit points, crossed with [grid]"),
]


def _classes() -> dict[str, type]:
    from miet_fed.jobs import config_classes

    return config_classes()


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def commented_toml(command: str, cfg: Any, source: str) -> str:
    """The effective config as TOML; above each key its help, valid values and default."""
    from miet_fed.config import describe

    values = _flat(cfg)
    lines = [f"# miet-fed {command}: the effective config of this command line ({source})"]
    section = ""
    for k in describe(type(cfg)):  # a strategy's own keys: [fed.<strategy>], after [fed]
        name, key = k.key.rsplit(".", 1)
        if name != section:
            section = name
            lines += ["", f"[{name}]"]
        value = values.get(k.key, k.default)  # another strategy's table: its defaults
        changed = "  # changed" if value != k.default else ""
        lines.append(f"# {k.help}")
        lines.append(f"# allowed: {k.allowed}; default: {toml_value(k.default)}")
        lines.append(f"{key} = {toml_value(value)}{changed}")
    return "\n".join(lines) + "\n"


def reference_markdown() -> str:
    """The README's config reference: every key of `tune` and `simulate`, one table; a key of
    one command only has '–' under the other (tune's own keys follow simulate's in a section)."""
    from miet_fed.config import describe

    tune = {k.key: k for k in describe(_classes()["tune"])}
    sim = describe(_classes()["simulate"])
    sim_keys = {k.key for k in sim}

    def cell(k: Any) -> str:
        return f"`{toml_value(k.default)}`" if k is not None else "–"

    rows = []
    for i, k in enumerate(sim):
        rows.append([f"`{k.key}`", cell(tune.get(k.key)), cell(k), k.allowed, k.help])
        section = k.key.split(".")[0]
        if i + 1 == len(sim) or sim[i + 1].key.split(".")[0] != section:
            own = [t for key, t in tune.items() if key not in sim_keys]
            own = [t for t in own if t.key.split(".")[0] == section]
            rows += [[f"`{t.key}`", cell(t), cell(None), t.allowed, t.help] for t in own]
    header = ["key", "tune default", "simulate default", "allowed", "help"]
    return table(header, rows) + "\n"


def _readme_block(text: str, path: Path) -> tuple[int, int]:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise MietError(f"{path} has no config reference block; add the lines {BEGIN} and {END}")
    return start + len(BEGIN), end


def readme_reference(path: Path) -> str:
    """The table between the README's markers, as written there."""
    text = Path(path).read_text()
    start, end = _readme_block(text, path)
    return text[start:end].strip("\n") + "\n"


def write_reference(path: Path) -> None:
    text = Path(path).read_text()
    start, end = _readme_block(text, path)
    Path(path).write_text(text[:start] + "\n" + reference_markdown() + text[end:])


def _sweep_reference() -> str:
    lines = ["# a sweep file (miet-fed sweep FILE.toml); keys of [set], [grid] and [[point]]"]
    lines.append("# are config keys: see `miet-fed config tune` or `miet-fed config simulate`")
    for key, default, allowed, text in SWEEP_KEYS:
        lines.append(f"{key:<18} {text}; allowed: {allowed}; default: {default}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    from miet_fed import cli, sweep_run

    sub = p.add_subparsers(dest="config_command", required=True, parser_class=cli._Parser)
    for name, (_, _, default_config) in cli.COMMANDS.items():
        q = sub.add_parser(name, help=f"the keys and effective config of `miet-fed {name}`")
        cli.add_common(q, default_config, name)
    q = sub.add_parser("sweep", help="the keys of a sweep file, and the points of one")
    sweep_run.add_arguments(q)
    q = sub.add_parser("reference", help="the README's config reference (markdown)")
    q.add_argument("--write", type=Path, metavar="README", help="replace the table in README")
    q.add_argument("--check", type=Path, metavar="README", help="exit 1 if README's table differs")


def run(args: argparse.Namespace) -> int:
    from miet_fed import cli
    from miet_fed.config import describe, load_config

    which = args.config_command
    if which == "reference":
        if args.write:
            write_reference(args.write)
            print(f"config reference written to {args.write}")
        elif args.check:
            if readme_reference(args.check) != reference_markdown():
                print(
                    f"{args.check}: config reference is stale; run miet-fed config reference "
                    f"--write {args.check}"
                )
                return 1
        else:
            print(reference_markdown(), end="")
        return 0
    if which == "sweep":
        print(_sweep_reference())
        if args.sweep is None and not args.grid:
            return 0
        from miet_fed import sweep_run

        args.dry_run = True
        return sweep_run.run(args)
    cls = _classes()[which]
    overrides = cli.overrides_of(args)
    cfg = load_config(cls, args.config, overrides)
    if args.json:
        values = json.loads(json.dumps({k: v for k, v in _flat(cfg).items()}))
        keys = [{**k._asdict(), "value": values.get(k.key, k.default)} for k in describe(cls)]
        print(json.dumps(keys))
        return 0
    from miet_fed.config import flatten

    n_set = len(flatten(overrides))
    source = f"file: {args.config or 'built-in defaults'}; {n_set} override(s) from the flags"
    print(commented_toml(which, cfg, source), end="")
    return 0


def _flat(cfg: Any) -> dict[str, Any]:
    from miet_fed.config import flatten, to_dict

    return flatten(to_dict(cfg))
