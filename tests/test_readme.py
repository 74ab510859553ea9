"""The README stays true where a machine can check it: every command it shows exists, every flag
it passes a command is one that command takes, and every preset it names loads."""

import re
from pathlib import Path

import pytest

from robust_mc import cli
from robust_mc.config import find_preset, load_yaml

README = Path(__file__).resolve().parents[1] / "README.md"


def _commands() -> list[list[str]]:
    """The robust-mc invocations in the README's code lines and command table, as words."""
    out = []
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("    "):  # a code line
            match = re.search(r"(?:^robust-mc|-m robust_mc)\s+(.*)", line.strip())
            if match:
                out.append(match.group(1).split("#")[0].split())
        out += [span.split() for span in re.findall(r"`robust-mc ([^`]+)`", line)]
    return [words for words in out if words and words[0] != "COMMAND"]  # "COMMAND --help"


def _subparsers() -> dict:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return dict(action.choices)


def test_every_command_and_flag_the_readme_shows_exists():
    commands = _subparsers()
    seen = _commands()
    assert len(seen) > 20
    for words in seen:
        assert words[0] in commands, f"README shows an unknown command: {' '.join(words)}"
        flags = set(commands[words[0]]._option_string_actions)
        for word in words[1:]:
            flag = word.split("=")[0].rstrip(",.;:)")
            if flag.startswith("--") and "|" not in flag and flag != "--":
                assert flag in flags, f"robust-mc {words[0]} has no {flag}"


@pytest.mark.parametrize("name", sorted({
    words[i + 1] for words in _commands() for i in range(len(words) - 1)
    if words[i] == "--config" and re.fullmatch(r"[a-z0-9-]+", words[i + 1])}))
def test_every_preset_the_readme_names_loads(name):
    assert isinstance(load_yaml(find_preset(name)), dict)


def test_the_attack_table_in_the_reference_names_every_registered_attack():
    from robust_mc.attacks import describe_attacks

    text = (README.parent / "docs" / "reference.md").read_text(encoding="utf-8")
    section = text.split("## Attacks", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    named = {re.split(r"[:`]", span)[0] for row in rows
             for span in re.findall(r"`([^`]+)`", row.split(" | ")[0])}
    assert named == set(describe_attacks()), "docs/reference.md#attacks and the registry differ"


def test_importing_the_package_stays_light():
    import subprocess
    import sys

    code = "import sys, robust_mc; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=README.parent)
    assert out.stdout.strip() == "False"
