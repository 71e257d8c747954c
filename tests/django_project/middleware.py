"""Middleware of the test project.

A ``Teapot`` a view raises answers 418 (exception middleware); ``?fail=error``
or ``?fail=404`` makes the response phase fail (after a live view wrote).
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpResponse


class Teapot(Exception):
    """Raised by a view; the middleware below turns it into a response."""


class TeapotMiddleware:
    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        fail = request.GET.get("fail")
        if fail == "error":
            raise RuntimeError("response middleware broke")
        if fail == "404":
            raise Http404("response middleware says not found")
        return response

    def process_exception(self, request: Any, exception: Exception) -> Any:
        if isinstance(exception, Teapot):
            return HttpResponse(f"teapot: {exception}", status=418)
        return None
