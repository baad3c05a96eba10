"""A small Django project that the Django tests serve: settings, urls with include(), views."""
