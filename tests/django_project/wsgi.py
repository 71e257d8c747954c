"""The test project's ``wsgi.py``, as the README shows it (plus an error reporter)."""

from __future__ import annotations

import os
from typing import Any

from django.core.wsgi import get_wsgi_application

from live_wsgi.django import Live

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_project.settings")

#: Errors after the commit that ``on_error`` reported, as ``(path, repr)``.
reported: list[tuple[str, str]] = []


def report(environ: Any, error: BaseException) -> None:
    reported.append((environ["PATH_INFO"], repr(error)))


application = Live(get_wsgi_application(), max_workers=8, on_error=report)
