"""Errors a user can act on. The CLI prints their message as one line and exits with status 2."""


class ShoprecError(Exception):
    """A problem with the input, the configuration or the environment, with a message naming the fix."""


def reason(cause: object) -> str:
    """``cause`` in a few words for a one-line message: an exception's type and the first line of its
    text (torch's ``load_state_dict`` lists every key; the first line says enough)."""
    why = str(cause)
    if isinstance(cause, Exception):
        lines = why.strip().splitlines()
        why = type(cause).__name__ + (f": {lines[0][:200]}" if lines else "")
    return why
