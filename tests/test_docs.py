"""README commands parse with the real CLI parser; relative links in README.md and docs/ resolve."""
import re
import shlex
from pathlib import Path

import pytest

from hpcgan.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def readme_commands() -> list[str]:
    lines, fenced = [], False
    for raw in (ROOT / "README.md").read_text().splitlines():
        if raw.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            continue
        line = raw.strip()
        m = re.search(r"(?:^|\s)(hpcgan\s.*)$", line)
        if not m or not (line.startswith("hpcgan ") or re.match(r"^(mpirun|srun|horovodrun)\s", line)):
            continue
        cmd = m.group(1).split(" #")[0].rstrip(" \\")
        if "$" in cmd or "..." in cmd or re.search(r"<[^>]+>", cmd):
            continue
        lines.append(cmd)
    return lines


COMMANDS = readme_commands()


def test_readme_has_commands():
    assert len(COMMANDS) >= 4


@pytest.mark.parametrize("cmd", COMMANDS)
def test_readme_command_parses(cmd):
    argv = shlex.split(cmd)[1:]
    try:
        build_parser().parse_known_args(argv)
    except SystemExit as e:  # argparse exits 2 on an unknown subcommand or bad option
        pytest.fail(f"{cmd!r} does not parse (exit {e.code})")


def test_misspelled_subcommand_fails():
    with pytest.raises(SystemExit):
        build_parser().parse_known_args(["trian", "--config", "crf-small"])


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    missing = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#")[0]
        if path and not (doc.parent / path).exists():
            missing.append(target)
    assert not missing, f"{doc.name}: broken links {missing}"
