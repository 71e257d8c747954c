"""gunicorn config for the multi-process metrics tests: the README's."""

from live_wsgi.gunicorn import *  # noqa: F403
from live_wsgi.metrics import child_exit  # noqa: F401
