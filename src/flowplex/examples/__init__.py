"""Runnable example flows.

- :class:`ReverseNumberAtomicFlow` replies ``{"output_number": <digits reversed>}`` to
  ``{"number": n}``.
- :class:`ReverseNumberSequentialFlow` reverses twice through two subflows in the non-blocking
  style (``get_reply``, a small state machine in ``flow_state``): 1234 gives 1234.
- :class:`ReverseNumberBlockingSequentialFlow` does the same in the blocking style
  (``get_reply_future(...).get_data()`` inside ``run``).

Each has a YAML default config beside this module.
"""

from .reverse_number import (
    ReverseNumberAtomicFlow,
    ReverseNumberBlockingSequentialFlow,
    ReverseNumberSequentialFlow,
    reverse_digits,
)

__all__ = [
    "ReverseNumberAtomicFlow",
    "ReverseNumberBlockingSequentialFlow",
    "ReverseNumberSequentialFlow",
    "reverse_digits",
]
