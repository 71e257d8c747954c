"""A small Django project for live_wsgi's tests: sqlite in a temporary directory.

``LIVE_WSGI_DJANGO_DB`` names the database file (the test makes it);
``LIVE_WSGI_DJANGO_LOG=1`` logs live_wsgi and Django to stderr (the server).
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "live_wsgi tests only, not a secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "tests.django_project.middleware.TeapotMiddleware",
]

ROOT_URLCONF = "tests.django_project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["LIVE_WSGI_DJANGO_DB"],
    },
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Fast and weak: only the tests' one user has a password.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

USE_I18N = True
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("fr", "French")]
USE_TZ = True

LOGGING: dict[str, object] = {"version": 1, "disable_existing_loggers": False}
if os.environ.get("LIVE_WSGI_DJANGO_LOG"):
    LOGGING = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"stderr": {"class": "logging.StreamHandler"}},
        "loggers": {
            "live_wsgi": {"handlers": ["stderr"], "level": "INFO"},
            "django.request": {"handlers": ["stderr"], "level": "ERROR"},
        },
    }
LOGIN_URL = "login"  # reversed, so it carries the script prefix
