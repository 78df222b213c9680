"""Every command the README shows names what exists: its ``seqvae`` sub-commands and flags
parse, the config files it names exist and its ``key=value`` overrides are valid keys of
those configs, and the tools it runs exist and take the flags it passes."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from seqvae.cli import parse
from seqvae.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[list[str]]:
    """The command lines of the README's ``bash`` blocks (comments and line continuations
    removed), then the commands quoted inline (`` `seqvae …` ``, `` `python tools/…` ``)."""
    text = (ROOT / "README.md").read_text()
    commands: list[list[str]] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`((?:seqvae|python tools/)[^`]*)`", prose):
        words = shlex.split(re.sub(r"\[[^\]]*\]", "", span))          # "[--quick]": optional flags shown in brackets
        if words[0] == "seqvae" and len(words) > 2:                    # `seqvae train`: a command's name, below
            commands.append(words)
        elif words[0] == "python":
            commands.append(words)
    return commands


def readme_command_names() -> set[str]:
    """Sub-commands the README names in prose (`` `seqvae NAME` ``)."""
    return set(re.findall(r"`seqvae ([a-z]+)`", (ROOT / "README.md").read_text()))


COMMANDS = readme_commands()


def test_the_readme_gives_the_two_set_up_commands_first():
    assert COMMANDS[:2] == [["make", "demo"], ["make", "test"]]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


@pytest.mark.parametrize("words", [c for c in COMMANDS if c[0] in ("seqvae", "torchrun")], ids=" ".join)
def test_seqvae_commands_parse_and_their_configs_exist(words):
    if words[0] == "torchrun":
        assert words[words.index("-m") + 1] == "seqvae.cli"
        words = ["seqvae", *words[words.index("-m") + 2:]]
    args = parse(words[1:])                                  # unknown commands or flags exit here
    overrides = list(getattr(args, "overrides", []) or [])
    if args.command == "train":
        assert (ROOT / args.config).is_file(), args.config
        RunConfig.load(ROOT / args.config, overrides)        # every override is a valid key and value
    if args.command == "plan":
        from seqvae.cli.plan import load_plan_config

        config = args.config if args.config and "=" not in args.config else None
        load_plan_config(str(ROOT / config) if config else None,
                         [*([args.config] if args.config and "=" in args.config else []), *overrides])
    for name in (getattr(args, "pretrained", "") or "",):
        if name:
            assert name in ("pusher", "pusher-actions"), name   # the names the shipped models are loaded by


@pytest.mark.parametrize("words", [c for c in COMMANDS if c[0] == "python"], ids=" ".join)
def test_tools_exist_and_take_the_flags_shown(words):
    tool = ROOT / words[1]
    assert tool.is_file(), words[1]
    source = tool.read_text()
    for flag in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
        assert f'"{flag}"' in source, f"{words[1]} has no option {flag}"


def test_every_subcommand_named_in_prose_exists():
    from seqvae.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert readme_command_names() <= set(sub.choices)


def test_every_command_is_one_of_the_known_kinds():
    assert {c[0] for c in COMMANDS} <= {"make", "seqvae", "torchrun", "python", "."}


def test_python_section_snippet_runs_as_printed(tmp_path):
    """The README's "Python" snippet, exactly as printed, in a fresh interpreter from the
    repository root: it loads the shipped model, rolls out, plans, trains and evaluates."""
    import ast
    import os
    import subprocess
    import sys

    section = (ROOT / "README.md").read_text().split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    snippets = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(snippets) == 1
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}   # its run folder lands in tmp_path
    out = subprocess.run([sys.executable, "-c", snippets[0]], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0] == "(1, 8, 2, 10, 3, 64, 64)"
    start, final = map(float, re.match(r"object to goal: ([\d.]+) -> ([\d.]+)", lines[1]).groups())
    assert start > 0 and final >= 0
    bound = ast.literal_eval(lines[-1])                            # a dict of floats, printed (training logs before)
    assert set(bound) >= {"neg_elbo", "bpd", "nll", "kl"}
    assert bound["neg_elbo"] == pytest.approx(bound["nll"] + bound["kl"], rel=1e-5)
    assert any(tmp_path.iterdir())                                 # the run folder was made under TMPDIR
