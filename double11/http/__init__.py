"""The HTTP adapter: an RSGI app over `Festival`, served by embedded granian."""

from double11.http.app import App, EmptyApp, build_app

__all__ = ["App", "EmptyApp", "build_app"]
