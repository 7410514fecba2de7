"""Progress bars and the messages printed beside them (tqdm, imported only when used, so that
``import deepfast`` and ``deepfast.attacks`` need neither it nor anything but torch and numpy)."""

from __future__ import annotations

from collections.abc import Iterable


def bar(iterable: Iterable | None = None, **kwargs):
    """tqdm.auto.tqdm(iterable, **kwargs)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


def write(message: str) -> None:
    """Print a line without breaking a progress bar (tqdm.write)."""
    from tqdm.auto import tqdm

    tqdm.write(message)
