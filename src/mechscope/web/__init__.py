"""`mechscope serve`: the web app over a specimen archive."""

from .app import create_app, serve

__all__ = ["create_app", "serve"]
