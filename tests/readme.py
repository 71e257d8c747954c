"""README.rst as data: its code blocks, in order, with what the suite does with each.

docutils parses the README (the same parser PyPI and Sphinx use, no
regexes): every literal block, a ``::`` one or a ``.. code-block:: LANG``
directive, becomes a ``Block``. What happens to a block depends on its
language:

- ``python`` (and a bare ``::`` block, which Sphinx highlights as Python
  too) is **run**: saved as a file, imported in a fresh interpreter, its
  ``test_*`` functions run by pytest, its module-level ``app`` served by a
  real server. A first line ``# name.py`` names the file (so ``gunicorn
  name:app`` in a shell block can point at it); other blocks get a made-up
  name.
- ``shell`` (``console``, ``bash``, ``sh``) is **checked**: each command
  must be one the suite knows how to check (``pip install``, ``gunicorn``,
  ``make``...), see ``tests/test_docs.py``.
- ``text``, ``nginx``, ``ini``...: shown, not run (``NOT_RUN``).

A block is left alone only when an RST comment right before it says so,
with the reason::

    .. test: skip: a fragment of a gunicorn config file

    .. code-block:: python

Any other ``.. test:`` comment is an error (a typo must not skip silently).
"""

from __future__ import annotations

import ast
import functools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from docutils import nodes
from docutils.frontend import get_default_settings
from docutils.parsers.rst import Parser
from docutils.utils import new_document

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.rst"

PYTHON = frozenset({"python", "python3", "py"})
SHELL = frozenset({"shell", "console", "bash", "sh"})
#: Languages shown as they are: configuration of other programs, diagrams.
NOT_RUN = frozenset({"text", "nginx", "ini", "toml", "yaml", "json", "html", "javascript"})

_SKIP = re.compile(r"test:\s*skip\s*(?:[:\u2014\u2013-]\s*(?P<reason>.*))?", re.DOTALL)
_FILENAME = re.compile(r"#\s*(?P<name>[\w.-]+\.py)\s*$")


class ReadmeError(AssertionError):
    """The README breaks one of the rules above; the message says where."""


@dataclass(frozen=True)
class Block:
    """One literal block of the README."""

    #: 1-based position among all blocks.
    index: int
    #: The README line of its first line of code.
    line: int
    #: ``python`` for a bare ``::`` block.
    language: str
    code: str
    #: Enclosing section titles, outermost first.
    sections: tuple[str, ...]
    #: The reason given in ``.. test: skip: reason``, or None.
    skip: str | None
    #: The file it is saved as (``# name.py`` on its first line, else made up).
    filename: str

    @property
    def section(self) -> str:
        return self.sections[-1] if self.sections else "(top)"

    @property
    def where(self) -> str:
        """For messages: README.rst line N, section S."""
        return f"README.rst line {self.line} ({self.section!r})"

    @property
    def module(self) -> str | None:
        """The module name it is imported as; None when the file name is not one."""
        stem = self.filename.removesuffix(".py")
        return stem if stem.isidentifier() else None

    @property
    def kind(self) -> str:
        if self.language in PYTHON:
            return "python"
        if self.language in SHELL:
            return "shell"
        return "other"

    def tree(self) -> ast.Module:
        return ast.parse(self.code, filename=self.where)

    def defines(self, name: str) -> bool:
        """Whether the module binds ``name`` at its top level."""
        for node in self.tree().body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name:
                return True
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
            if isinstance(node, ast.Import | ast.ImportFrom) and any(
                (alias.asname or alias.name) == name for alias in node.names
            ):
                return True
        return False

    def test_functions(self) -> list[str]:
        return [node.name for node in self.tree().body
                if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]

    def imports(self) -> list[str]:
        """Top-level names of the modules it imports (``live_wsgi.flask`` kept whole)."""
        found = []
        for node in ast.walk(self.tree()):
            if isinstance(node, ast.Import):
                found += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                if node.module == "live_wsgi":  # from live_wsgi import metrics: a submodule?
                    found += [f"live_wsgi.{alias.name}" for alias in node.names]
                else:
                    found.append(node.module)
        return found

    def paths(self) -> list[str]:
        """URL paths its code names as string constants (``"/ticks"``)."""
        return sorted({node.value for node in ast.walk(self.tree())
                       if isinstance(node, ast.Constant) and isinstance(node.value, str)
                       and re.fullmatch(r"/[\w./-]*", node.value)})

    def commands(self) -> list[list[str]]:
        """A shell block's commands, each split as the shell would (comments dropped)."""
        text = self.code.replace("\\\n", " ")
        result: list[list[str]] = []
        for line in text.splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            current: list[str] = []
            for token in lexer:
                if token in {"&&", "||", ";", "|", "&"}:
                    if current:
                        result.append(current)
                    current = []
                else:
                    current.append(token)
            if current:
                result.append(current)
        return result


def parse(path: Path = README) -> nodes.document:
    settings = get_default_settings(Parser)
    settings.report_level = 2  # warnings and up are reported...
    settings.halt_level = 2  # ...and stop the parse: a broken README fails here
    document = new_document(str(path), settings)
    Parser().parse(path.read_text(encoding="utf-8"), document)
    return document


def _titles(node: nodes.Node) -> tuple[str, ...]:
    titles = []
    parent = node.parent
    while parent is not None:
        if isinstance(parent, nodes.section):
            titles.append(parent[0].astext())
        parent = parent.parent
    return tuple(reversed(titles))


def _language(block: nodes.literal_block) -> str:
    classes = block.get("classes", [])
    if "code" in classes:  # .. code-block:: LANG (docutils' "code" directive)
        languages = [c for c in classes if c != "code"]
        if not languages:
            raise ReadmeError(f"README.rst line {block.line}: a code-block without a language")
        return str(languages[0])
    return "python"  # a bare :: block: Python, as Sphinx highlights it


def _first_line(block: nodes.literal_block, source_lines: list[str]) -> int:
    """The README line where the block's code starts."""
    first = block.astext().splitlines()[0]
    start = (block.line or 1) - 1
    for number in range(max(0, start - 5), len(source_lines)):
        if source_lines[number].strip() == first.strip():
            return number + 1
    return block.line or 0


def blocks(path: Path = README) -> list[Block]:
    """Every literal block of the README, in order."""
    document = parse(path)
    source_lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    pending_skip: str | None = None
    names: dict[str, int] = {}
    per_section: dict[tuple[str, ...], int] = {}
    for node in document.findall(lambda n: isinstance(n, nodes.comment | nodes.literal_block)):
        if isinstance(node, nodes.comment):
            text = node.astext().strip()
            if not text.startswith("test:"):
                continue
            match = _SKIP.fullmatch(text)
            if match is None:
                raise ReadmeError(f"README.rst line {node.line}: unknown marker {text!r}; "
                                  "the only one is '.. test: skip: <reason>'")
            reason = " ".join((match["reason"] or "").split())
            if not reason:
                raise ReadmeError(f"README.rst line {node.line}: '.. test: skip' needs a "
                                  "reason ('.. test: skip: <why this block cannot run>')")
            pending_skip = reason
            continue
        assert isinstance(node, nodes.literal_block)
        code = node.astext()
        sections = _titles(node)
        per_section[sections] = per_section.get(sections, 0) + 1
        lines = code.splitlines()
        named = _FILENAME.fullmatch(lines[0].strip()) if lines else None
        if named is not None:
            filename = named["name"]
        else:
            slug = re.sub(r"\W+", "_", (sections[-1] if sections else "top").lower()).strip("_")
            filename = f"readme_{slug}_{per_section[sections]}.py"
        line = _first_line(node, source_lines)
        if filename in names:
            raise ReadmeError(f"README.rst line {line}: a second block named {filename} "
                              f"(the first is on line {names[filename]})")
        names[filename] = line
        found.append(Block(
            index=len(found) + 1, line=line, language=_language(node), code=code,
            sections=sections, skip=pending_skip, filename=filename,
        ))
        pending_skip = None
    if pending_skip is not None:
        raise ReadmeError(f"'.. test: skip: {pending_skip}' is followed by no block")
    return found


@functools.cache
def section_text(section: str, path: Path = README) -> str:
    """The prose of one section (its paragraphs, lists and tables; not its blocks)."""
    document = parse(path)
    for node in document.findall(nodes.section):
        if node[0].astext() == section:
            parts = [child.astext() for child in node.findall(nodes.TextElement)
                     if not isinstance(child, nodes.literal_block)]
            return "\n".join(parts)
    raise ReadmeError(f"README.rst has no section {section!r}")


def urls(text: str) -> list[str]:
    """URL paths named in prose: ``http://127.0.0.1:8000/x``, ``localhost:8000/x``."""
    return sorted({match[1] or "/" for match in re.finditer(
        r"(?:https?://)?(?:localhost|127\.0\.0\.1)(?::\d+)?(/[\w./?=&-]*)?", text)})
