"""Errors a user can act on. The CLI prints their message as one line and exits with status 2."""


class ShoprecError(Exception):
    """A problem with the input, the configuration or the environment, with a message naming the fix."""
