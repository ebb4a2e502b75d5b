"""The HTTP adapter: ASGI app over `Festival`, served by embedded granian."""

from double11.http.app import App, EmptyApp, build_app

__all__ = ["App", "EmptyApp", "build_app"]
