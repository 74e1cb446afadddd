# SPDX-License-Identifier: MIT
"""MkDocs hook: render the Sphinx roles in docstrings (``:class:`Plan```) as plain code.

The library's docstrings are also read with ``help()``, where ``:class:`Plan``` is the
conventional spelling; mkdocstrings' Google style leaves the role name in the text.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|meth|func|attr|mod|data|exc|obj):(?=<code>)")


def on_page_content(html: str, **_: Any) -> str:
    """Drop the role prefix before inline code in the rendered page."""
    return _ROLE.sub("", html)
