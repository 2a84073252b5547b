"""The one exception type the live pipeline raises for problems a user can fix."""

from __future__ import annotations


class LiveError(RuntimeError):
    """A problem with the device, input, model or options, explained in one sentence."""
