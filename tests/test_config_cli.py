"""`miet-fed config`, `--version`, the simulate flags and the README's config reference: what a
user sees comes from `config.describe`, and that from the dataclasses."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from miet_fed import __version__
from miet_fed.cli import COMMANDS, TOOL_COMMANDS, build_parser, main
from miet_fed.config import (
    SimulateConfig,
    TuneConfig,
    build_config,
    describe,
    load_config,
    parse_overrides,
    to_dict,
)
from miet_fed.config_doc import readme_reference, reference_markdown
from miet_fed.errors import MietError

README = Path(__file__).resolve().parent.parent / "README.md"


def _out(capsys, *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(("command", "cls"), [("tune", TuneConfig), ("simulate", SimulateConfig)])
def test_config_lists_every_key_with_default_allowed_and_help(capsys, command, cls):
    text = _out(capsys, "config", command)
    for k in describe(cls):
        section, key = k.key.rsplit(".", 1)
        assert f"\n[{section}]\n" in text and f"\n{key} = " in text, k.key
        assert f"# {k.help}\n" in text and f"# allowed: {k.allowed}; default: " in text
    assert "# changed" not in text  # nothing changed: the built-in defaults


def test_config_prints_the_effective_config_of_a_command_line(capsys, tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("[fed]\nrounds = 3\n")
    args = [str(toml), "--strategy", "fedavg", "--num-clients", "7", "--set", "model.k=9"]
    text = _out(capsys, "config", "simulate", *args)
    assert 'strategy = "fedavg"  # changed' in text and "num_clients = 7  # changed" in text
    # The listing is a TOML file: saved and read back, it is the config the command would run.
    printed = build_config(SimulateConfig, tomllib.loads(text))
    expected = load_config(
        SimulateConfig,
        toml,
        parse_overrides(["model.k=9", "fed.strategy=fedavg", "fed.num_clients=7"]),
    )
    assert to_dict(printed) == to_dict(expected) and printed.fed.rounds == 3


def test_simulate_has_strategy_clients_and_rounds_flags():
    args = build_parser().parse_args(
        ["simulate", "--strategy", "fedavg", "--num-clients", "3", "--rounds", "2"]
    )
    assert (args.strategy, args.num_clients, args.rounds) == ("fedavg", "3", "2")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["tune", "--strategy", "fedavg"])  # one device: no strategy


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"miet-fed {__version__}"


def test_config_errors_are_one_line(capsys):
    assert main(["config", "simulate", "--set", "fed.nope=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown key 'fed.nope'" in err


def test_readme_config_reference_matches_describe():
    """Regenerate with `miet-fed config reference --write README.md` after changing a key."""
    assert readme_reference(README) == reference_markdown()


def test_help_names_only_commands_that_exist(capsys):
    """No help text points at a command that does not exist (it once named `strategies`)."""
    commands = set(COMMANDS) | set(TOOL_COMMANDS)
    texts = [k.help for cls in (TuneConfig, SimulateConfig) for k in describe(cls)]
    for argv in (["--help"], *([c, "--help"] for c in commands)):
        with pytest.raises(SystemExit):
            main(argv)
        texts.append(capsys.readouterr().out)
    for text in texts:
        for name in re.findall(r"`miet-fed ([a-z][a-z-]*)", text):
            assert name in commands, (name, text[:200])


def _violations(rule: str) -> tuple[float, float] | None:
    """(a value the rule allows, one it forbids) for '>= x' and '> x' rules."""
    m = re.fullmatch(r"(>=|>) (-?[\d.]+)(?: .*)?", rule)
    if m is None:
        return None
    bound = float(m.group(2))
    return (bound, bound - 1) if m.group(1) == ">=" else (bound + 0.5, bound)


RANGED = {k.key: k.allowed for k in describe(SimulateConfig) if _violations(k.allowed)}


def _set(key: str, value: object) -> dict:
    """`key` (section.key, or fed.<strategy>.key with that strategy chosen) = value."""
    parts = key.split(".")
    extra = {"rank": {"heads": 1}, "heads": {"rank": 1}}.get(parts[-1], {})
    if len(parts) == 3:
        return {"fed": {"strategy": parts[1], parts[1]: {parts[2]: value}}}
    return {parts[0]: {parts[1]: value, **extra}}


def test_every_range_is_documented_and_enforced():
    """Strategy parameters too: each strategy's table is checked like the sections."""
    assert {"fed.fedprox.mu", "fed.alpha", "train.lr", "model.k"} <= set(RANGED)


@pytest.mark.parametrize("key", sorted(RANGED))
def test_documented_ranges_are_the_ones_the_config_enforces(key):
    good, bad = _violations(RANGED[key])
    default = next(k.default for k in describe(SimulateConfig) if k.key == key)
    typ = type(default)
    build_config(SimulateConfig, _set(key, typ(good)))
    if key == "fed.classes_per_client":
        return  # checked when partitioning, against the dataset's classes
    with pytest.raises(MietError):
        build_config(SimulateConfig, _set(key, typ(bad)))
