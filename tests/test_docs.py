"""The README and docs/ stay true: links resolve, generated pages match the code, the README stays short."""

from __future__ import annotations

import re
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from ml.cli import COMMAND_MODULES
from ml.errors import ExitCode
from ml.serve.openapi import openapi_json
from ml.serve.settings import ServeSettings

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_NOT_IN_SLUG = re.compile(r"[^\w\- ]")
_PARSER = MarkdownIt("commonmark").enable("table")


def _tokens(page: Path) -> list[Token]:
    return _PARSER.parse(page.read_text(encoding="utf-8"))


def _plain_text(inline: Token) -> str:
    """A heading's text as GitHub renders it: code spans and link texts without their markup."""
    return "".join(child.content for child in inline.children or [] if child.type in ("text", "code_inline"))


def github_slug(text: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return _NOT_IN_SLUG.sub("", text.strip().lower()).replace(" ", "-")


def headings(page: Path) -> list[str]:
    tokens = _tokens(page)
    return [_plain_text(inline) for opening, inline in pairwise(tokens) if opening.type == "heading_open"]


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a page; GitHub numbers repeated slugs ``-1``, ``-2``, ..."""
    seen: Counter[str] = Counter()
    found = set()
    for slug in map(github_slug, headings(page)):
        found.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
        seen[slug] += 1
    return found


def relative_links(page: Path) -> list[str]:
    """Link and image targets outside code that point into the repository (no scheme)."""
    targets = []
    for token in _tokens(page):
        for child in token.children or []:
            target = child.attrs.get("href") or child.attrs.get("src")
            if child.type in ("link_open", "image") and isinstance(target, str) and not _SCHEME.match(target):
                targets.append(target)
    return targets


def broken_links(page: Path) -> list[str]:
    problems = []
    for target in relative_links(page):
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            problems.append(f"{target}: {resolved} does not exist")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{target}: no heading with anchor #{fragment} in {resolved.name}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    assert broken_links(page) == []


def test_readme_stays_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; reference material goes into docs/"


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("`python -m ml db init | seed`", "python--m-ml-db-init--seed"),
        ("Settings shared by every command", "settings-shared-by-every-command"),
        ("Open Inference Protocol (V2)", "open-inference-protocol-v2"),
        ("Refresh and predict, end to end", "refresh-and-predict-end-to-end"),
    ],
)
def test_slugs_are_githubs(tmp_path: Path, heading: str, slug: str) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"# {heading}\n\n## {heading}\n")
    assert anchors(page) == {slug, f"{slug}-1"}


def test_broken_links_are_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#other-page) [ok](#page) [web](https://example.org/x)\n"
        "[gone](missing.md) [bad anchor](other.md#nope) `[in code](missing.md)`\n"
    )
    problems = broken_links(page)
    assert len(problems) == 2
    assert problems[0].startswith("missing.md:") and problems[1].startswith("other.md#nope:")


def test_committed_openapi_schema_is_the_apps() -> None:
    committed = (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
    assert committed == openapi_json(), (
        "docs/openapi.json is stale: run `.venv/bin/python -m ml.serve.openapi > docs/openapi.json`"
    )


@pytest.mark.parametrize("command", COMMAND_MODULES)
def test_every_ml_command_has_one_reference_section(command: str) -> None:
    sections = [
        f"{page.name}: {heading}"
        for page in PAGES
        for heading in headings(page)
        if heading.startswith(f"python -m ml {command}")
    ]
    assert len(sections) == 1, f"`python -m ml {command}` needs exactly one section in docs/, found {sections}"


def test_exit_code_table_lists_every_code() -> None:
    tokens = _tokens(ROOT / "docs" / "classifier.md")
    start = next(i for i, t in enumerate(tokens) if t.type == "inline" and t.content == "Exit codes")
    table_end = next(i for i, t in enumerate(tokens) if i > start and t.type == "table_close")
    first_cells = [
        tokens[i + 1].content
        for i in range(start, table_end)
        if tokens[i].type == "td_open" and tokens[i - 1].type == "tr_open"
    ]
    assert first_cells == [str(code.value) for code in ExitCode]


def test_every_serving_setting_is_documented() -> None:
    documented = "\n".join(page.read_text(encoding="utf-8") for page in PAGES)
    missing = [f"ML_{name.upper()}" for name in ServeSettings.model_fields if f"`ML_{name.upper()}`" not in documented]
    assert missing == [], f"serving settings missing from docs/serving.md#settings: {missing}"
