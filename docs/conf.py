"""Sphinx configuration: the guide from README.rst, the API from the docstrings,
the guarantees from the behaviour specification (``../shared/SPEC.md``).

``make docs`` builds it with warnings as errors.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.errors import ConfigError
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: The specification lives in shared/ beside the checkout (CI lays it there
#: too, read-only); guarantees.md includes it by this relative path.
SPEC = ROOT.parent / "shared" / "SPEC.md"
if not SPEC.is_file():
    raise ConfigError(
        f"{SPEC} is missing: the guarantees page includes the behaviour specification "
        "from shared/SPEC.md beside the checkout (../shared/SPEC.md)"
    )

_setup = configparser.ConfigParser()
_setup.read(ROOT / "setup.cfg")

project = "live_wsgi"
author = "the live_wsgi developers"
copyright = "the live_wsgi developers"
release = _setup["metadata"]["version"]
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
# The SPEC's own heading anchors, so its sections can be linked.
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"live_wsgi {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}


# -- the demo's screenshot --------------------------------------------------------------------

#: Added by a later change (Sphinx copies it into the site's _images/); until
#: then the page says where it goes.
DEMO_SCREENSHOT = HERE / "_static" / "demo.png"


class DemoScreenshot(SphinxDirective):
    """``.. demo-screenshot::`` the demo's picture, or a note saying where it goes."""

    def run(self) -> list[nodes.Node]:
        if DEMO_SCREENSHOT.is_file():
            return [nodes.image(uri=str(DEMO_SCREENSHOT.relative_to(HERE)),
                                alt="The demo page: a live clock, the stream log, and a "
                                    "CSV export with its progress bar")]
        note = nodes.paragraph()
        note += nodes.emphasis(text="The demo's screenshot goes here")
        note += nodes.Text(f" (docs/{DEMO_SCREENSHOT.relative_to(HERE)}: the page shows it "
                           "as soon as the file exists).")
        return [note]


# -- every README section is on some page ---------------------------------------------------

_README = ROOT / "README.rst"
_included: list[str] = []
log = logging.getLogger(__name__)


def _reset(app: Sphinx) -> None:
    _included.clear()


def _remember_include(app: Sphinx, relative_path: Path, parent_docname: str,
                      content: list[str]) -> None:
    if Path(app.srcdir, relative_path).resolve() == _README.resolve():
        _included.append(content[0])


def _readme_sections() -> list[str]:
    """README.rst's section titles (a line over an adornment line at least as long)."""
    lines = _README.read_text(encoding="utf-8").splitlines()
    return [lines[i] for i in range(len(lines) - 1)
            if lines[i].strip() and not lines[i].startswith((" ", ".."))
            and re.fullmatch(r"([-~=^\"'`#*+])\1+", lines[i + 1])
            and len(lines[i + 1]) >= len(lines[i].rstrip())]


def _check_readme_coverage(app: Sphinx, env: Any) -> None:
    """Warn (an error under -W) about a README section that no page includes."""
    text = "\n".join(_included)
    for section in _readme_sections()[1:]:  # [0]: the README's title; the index has its own
        if not re.search(rf"^{re.escape(section)}$", text, re.M):
            log.warning("README.rst section %r is on no page of the site: the docs pages "
                        "include README.rst between its '.. docs: <page>' markers", section)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("demo-screenshot", DemoScreenshot)
    app.connect("builder-inited", _reset)
    app.connect("include-read", _remember_include)
    app.connect("env-check-consistency", _check_readme_coverage)
    return {"parallel_read_safe": False}
