"""uWSGI --wsgi-file entry point of the sample app."""

from app import application  # noqa: F401
