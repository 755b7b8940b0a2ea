"""The README and docs/ stay true: links resolve, generated pages match the code, the README stays short."""

from __future__ import annotations

import re
import shlex
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


# -- shell examples ------------------------------------------------------------------------------

EXTERNAL_TOOLS = {"curl", "kind", "kubectl", "pulumi", "git", "aws", "docker"} | {
    "cd",
    "export",
    "less",
    "ls",
    "seq",
    "printf",
    "echo",
    "cat",
    "head",
    "mkdir",
    "rm",
    "cp",
    "time",
}
"""Commands the docs may name that the project does not install: the user's own tools."""
_SHELL_FENCES = ("bash", "sh", "shell")


def shell_commands(page: Path) -> list[list[str]]:
    """Every simple command of the page's shell examples, as words (env assignments dropped).

    A synopsis line (``[A | B]`` or ``A|B`` alternatives) is one command: its ``|`` is not a pipe.
    """
    commands = []
    for token in _tokens(page):
        if token.type != "fence" or token.info.strip() not in _SHELL_FENCES:
            continue
        pending = ""
        for line in token.content.replace("\\\n", " ").splitlines():
            line = f"{pending} {line}" if pending else line
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            try:
                tokens = list(lexer)
            except ValueError:  # a quoted string that goes on on the next line
                pending = line
                continue
            pending = ""
            synopsis = "[" in line or re.search(r"\S\|\S", line)  # `[A | B]`, `A|B`: alternatives, not pipes
            operators = {"&&", "||", ";", "(", ")", "$("} | (set() if synopsis else {"|"})
            words: list[str] = []
            for word in [*tokens, ";"]:
                if word in operators or word.endswith("$("):
                    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
                        words = words[1:]
                    if words:
                        commands.append(words)
                    words = []
                else:
                    words.append(word)
    return commands


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-z][a-z-]*):", text, re.M))


def command_problem(words: list[str]) -> str | None:
    """Why a documented command cannot run as written on a machine set up by ``make env``, or None."""
    program = words[0]
    if program in ("python", ".venv/bin/python", "python3"):
        if words[1:2] != ["-m"] and not (len(words) > 1 and (ROOT / words[1]).is_file()):
            return f"{' '.join(words)}: neither `-m <module>` nor a script of the repository"
        return None
    if program.startswith(".venv/bin/"):
        return None if (ROOT / program).exists() else f"{program} is not installed by `make env`"
    if program == "make":
        missing = [t for t in words[1:] if not t.startswith("-") and t not in _make_targets()]
        return f"make {' '.join(missing)}: no such Makefile target" if missing else None
    if "/" in program:
        return None if (ROOT / program).exists() else f"{program} does not exist"
    if program in EXTERNAL_TOOLS:
        return None
    return f"`{program}` is neither installed by the project nor a documented prerequisite (bare name on PATH?)"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_shell_examples_name_commands_that_exist(page: Path) -> None:
    assert [p for words in shell_commands(page) if (p := command_problem(words))] == []


def test_a_bare_tool_name_is_caught() -> None:
    assert command_problem(["checkov", "-d", "render"]) is not None
    assert command_problem([".venv/bin/checkov", "-d", "render"]) is None
    assert command_problem(["make", "nonsense"]) is not None


def _module_commands() -> list[tuple[str, ...]]:
    """Each distinct ``python -m <module> [<subcommand>...]`` prefix the docs use."""
    found: set[tuple[str, ...]] = set()
    for page in PAGES:
        for words in shell_commands(page):
            if words[0] in ("python", ".venv/bin/python") and words[1:2] == ["-m"] and len(words) > 2:
                prefix = [words[2]]
                for word in words[3:]:
                    if word.startswith("-") or not re.fullmatch(r"[a-z][a-z-]*", word):
                        break
                    prefix.append(word)
                found.add(tuple(prefix))
    return sorted(found)


@pytest.mark.slow
@pytest.mark.parametrize("prefix", _module_commands(), ids=" ".join)
def test_documented_module_commands_run(prefix: tuple[str, ...]) -> None:
    """``--help`` of every documented ``python -m`` command runs: the module and its subcommands exist."""
    import subprocess
    import sys

    # Positional arguments (a version name, a stack) are not subcommands: drop trailing words until
    # the parser accepts the prefix, but never below the module itself.
    words = list(prefix)
    while True:
        result = subprocess.run(
            [sys.executable, "-m", *words, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        if result.returncode == 0 or len(words) == 1:
            break
        words.pop()
    assert result.returncode == 0, f"python -m {' '.join(words)} --help failed:\n{result.stderr[-2000:]}"
    assert "usage" in result.stdout.lower()


def test_every_published_benchmark_table_has_a_producer() -> None:
    """docs/benchmarks.md's marked tables are written by a bench script, never typed by hand."""
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    from publish import blocks

    producers = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "bench").glob("*.py"))
    names = blocks()
    assert "setup-times" in names
    assert [n for n in names if f'publish("{n}"' not in producers] == []
