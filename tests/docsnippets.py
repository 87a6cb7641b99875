"""The code blocks of ``docs/migrating.md``, so tests run what the page shows."""

from __future__ import annotations

import re
from pathlib import Path

MIGRATING = Path(__file__).resolve().parent.parent / "docs" / "migrating.md"


def python_blocks(section: str) -> list[str]:
    """The ```python blocks under the ``## <section>`` heading, in order."""
    text = MIGRATING.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else len(text)]
    return re.findall(r"```python\n(.*?)```", body, re.DOTALL)
