"""The README and docs/: every link stays inside the repository and resolves (file and, for a page, heading).

Links are Markdown inline links and images ``[text](target)`` and reference definitions
``[name]: target`` outside code blocks and inline code. A target outside the repository (a URL,
an absolute path, ``../`` out of the checkout) is refused: the documentation must read the same
in any clone. Anchors are checked against the target page's headings, slugged as GitHub does.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
INLINE_CODE = re.compile(r"`[^`\n]*`")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
EXTERNAL = re.compile(r"^([a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)


def prose(text: str) -> str:
    """The page without fenced code blocks and inline code, where nothing is a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def links(page: Path) -> list[str]:
    text = prose(page.read_text())
    return INLINE_LINK.findall(text) + REFERENCE.findall(text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            out.add(base if count == 0 else f"{base}-{count}")
    return out


def problems(page: Path, root: Path = ROOT) -> list[str]:
    found = []
    for target in links(page):
        if EXTERNAL.match(target) or target.startswith("/"):
            found.append(f"{target}: outside the repository")
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.is_relative_to(root):
            found.append(f"{target}: outside the repository")
        elif not resolved.exists():
            found.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            found.append(f"{target}: no heading #{anchor} in {resolved.relative_to(root)}")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(page):
    assert problems(page) == []


def test_the_checker_catches_what_it_should(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# B page\n\n## The `x` key (beta)\n")
    page = tmp_path / "docs" / "a.md"
    page.write_text(
        "[ok](b.md) [ok](b.md#the-x-key-beta) [ok](#a) [web](https://example.org) [gone](c.md)\n"
        "[up](../../outside.md) [bad](b.md#nope)\n\n# A\n\n```\n[in code](nowhere.md)\n```\n`[inline](nowhere.md)`\n"
    )
    assert problems(page, tmp_path) == [
        "https://example.org: outside the repository",
        "c.md: no such file",
        "../../outside.md: outside the repository",
        "b.md#nope: no heading #nope in docs/b.md",
    ]


def test_the_readme_is_a_short_entry_point():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert "make run" in text and "make test" in text and "experiment=quick" in text
    assert "docs/" in text


def test_the_main_job_is_the_same_command_wherever_it_is_written():
    """make run's recipe is what the --help catalogue, docs/running.md and the committed run show."""
    recipe = re.search(r"^run:.*\n\t\$\(PY\) -m amp_fl (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert recipe is not None
    command = recipe.group(1).strip()
    catalogue = (ROOT / "amp_fl" / "launch" / "catalogue.py").read_text()
    assert f"amp-fl {command}" in catalogue
    running = " ".join((ROOT / "docs" / "running.md").read_text().split())
    assert f"python -m amp_fl {command}" in running
    first_line = (ROOT / "reports" / "main" / "output.txt").read_text().splitlines()[0]
    assert f"-m amp_fl {command} " in first_line
