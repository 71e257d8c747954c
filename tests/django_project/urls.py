from __future__ import annotations

from django.conf.urls.i18n import i18n_patterns
from django.urls import path

from live_wsgi.django import live

from . import views

urlpatterns = [
    path("plain/", views.plain, name="plain"),
    path("accounts/login/", views.plain, name="login"),
    path("ack/<str:key>/<int:n>/", views.ack),
    path("result/<str:key>/", views.result),
    path("feed/<str:key>/", views.feed),
    path("endless/<str:key>/", views.endless),
    path("private/", views.private),
    path("forbidden/", views.forbidden),
    path("middleware-fails/<str:key>/", views.middleware_fails),
    path("fails-before/", views.fails_before),
    path("teapot/", views.teapot),
    path("fails-after/", views.fails_after),
    path("where/", views.where, name="where"),
    path("streaming/<str:key>/", views.streaming),
    path("returns-after-write/", views.returns_after_write),
    path("long-tail-after-write/", views.long_tail_after_write),
    path("creates-then-fails/<str:name>/", views.creates_then_fails),
    path("clock/", live(views.Clock.as_view())),
    *i18n_patterns(
        path("localized/", views.localized), prefix_default_language=False
    ),
]
