"""The README stays short, and every relative link in it and in docs/ points somewhere real."""

import re
import shlex
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(text):
    """The text without fenced code blocks and inline code, where brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path):
    """GitHub's heading anchors: lower case, punctuation (and code's backticks) dropped, spaces
    as hyphens, a repeated heading numbered."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    seen, found = {}, set()
    for heading in re.findall(r"^#+ (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def relative_links(path):
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(path.read_text())):
        if not re.match(r"[a-z]+:", target):  # http:, https:, mailto: are not checked
            yield target


def test_readme_is_at_most_150_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, len(lines)


def test_readme_says_how_to_dream_offline_near_the_top():
    top = "\n".join((ROOT / "README.md").read_text().splitlines()[:40])
    assert "DEEPDREAM_CAFFE_MIRROR=" in top and "make dream" in top


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files_and_anchors(page):
    broken = []
    for link in relative_links(page):
        name, _, anchor = link.partition("#")
        target = (page.parent / unquote(name)).resolve() if name else page
        if not target.exists():
            broken.append(link)
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(link)
    assert not broken, broken


def test_readme_has_one_example_per_subcommand_and_each_parses():
    from deepdream_caffe.parser import build_parser

    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    text = (ROOT / "README.md").read_text()
    lines = [
        line
        for block in re.findall(r"```sh\n(.*?)```", text, re.S)
        for line in block.splitlines()
        if line.startswith("deepdream-caffe ")
    ]
    seen = [parser.parse_args(shlex.split(line)[1:]).command for line in lines]
    assert sorted(seen) == sorted(subcommands)
