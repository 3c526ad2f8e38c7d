"""Progress bars for long sweeps (written to stderr; chapters tag such cells ``nbval-ignore-output``)."""
from __future__ import annotations

import os
import sys
from typing import Iterable, Optional, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: Optional[str] = None, total: Optional[int] = None) -> Iterable[T]:
    """Wrap ``iterable`` in a plain-text tqdm bar on stderr (disabled when ``ORTHO_PROGRESS=0``)."""
    disable = os.environ.get("ORTHO_PROGRESS", "1") == "0"
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, ascii=True, mininterval=1.0,
                disable=disable, leave=True)
