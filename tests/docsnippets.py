"""The code blocks of ``docs/migrating.md`` and ``README.md``, so tests run what they show."""

from __future__ import annotations

import re
from pathlib import Path

MIGRATING = Path(__file__).resolve().parent.parent / "docs" / "migrating.md"
README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(section: str, page: Path = MIGRATING) -> list[str]:
    """The ```python blocks under the ``## <section>`` heading of ``page``, in order."""
    text = page.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else len(text)]
    return re.findall(r"```python\n(.*?)```", body, re.DOTALL)
