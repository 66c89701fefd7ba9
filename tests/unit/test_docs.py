"""The docs site's generated flag reference: what each command's --help prints, flag for flag."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

from pipeline import evaluate, options
from service import flags as serve_flags

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = runpy.run_path(str(ROOT / "scripts" / "flag_reference.py"))


def _help_flags(text: str) -> list[str]:
    return re.findall(r"^  --(\w+)", text, flags=re.M)


def _page_sections() -> dict[str, list[str]]:
    """Per command section of docs/reference/flags.md, the flags its table lists."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in (ROOT / "docs" / "reference" / "flags.md").read_text().splitlines():
        m = re.match(r"^## `(.+)`$", line)
        if m:
            current = sections.setdefault(m[1], [])
        m = re.match(r"^\| `--(\w+)` \|", line)
        if m and current is not None:
            current.append(m[1])
    return sections


def test_the_committed_flag_reference_is_what_the_generator_renders():
    page = ROOT / "docs" / "reference" / "flags.md"
    assert page.read_text() == REFERENCE["render"](), (
        "docs/reference/flags.md is stale: run .venv/bin/python scripts/flag_reference.py"
    )


@pytest.mark.parametrize(
    ("command", "help_text"),
    [
        ("python -m pipeline.run", options.help_text()),
        ("python -m pipeline.serve", serve_flags.help_text()),
        ("python -m pipeline.evaluate", evaluate.HELP),
    ],
)
def test_the_flag_reference_lists_exactly_the_flags_of_help(command, help_text):
    listed = _help_flags(help_text)
    assert listed, "--help lists no flags"
    assert _page_sections()[command] == listed


def test_the_readme_is_a_front_door_whose_links_lead_somewhere():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if not t.startswith(("http://", "https://"))]
    assert local, "the README links to no page"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"
