"""Batch helpers: what a batch item may look like, per-item errors, a progress bar."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class BatchItemError:
    """A batch item that failed; the others are unaffected."""

    index: int
    error: BaseException

    @property
    def message(self) -> str:
        return f"{type(self.error).__name__}: {self.error}"


def as_request(item: Any) -> tuple[Any, str, dict]:
    """Accept (images, question), {"images"/"image": ..., "question": ..., **kwargs} or an
    image alone (described)."""
    from qvl_client.client import DESCRIBE_PROMPT

    if isinstance(item, dict):
        kw = dict(item)
        images = kw.pop("images", kw.pop("image", None))
        question = kw.pop("question", DESCRIBE_PROMPT)
        return images, question, kw
    if isinstance(item, tuple) and len(item) == 2:
        return item[0], item[1], {}
    return item, DESCRIBE_PROMPT, {}


class Progress:
    """A one-line progress bar on stderr; on by default for batches of 20+ on a terminal."""

    def __init__(self, total: int, enabled: bool | None = None, stream=None):
        self.total, self.done, self.failed = total, 0, 0
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = total >= 20 and getattr(self.stream, "isatty", lambda: False)()
        self.enabled = enabled
        self.t0 = time.monotonic()
        self._last = 0.0

    def update(self, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.2 or self.done == self.total):
            self._last = now
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            rate = self.done / max(now - self.t0, 1e-9)
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
                              f"  failed {self.failed}  {rate:.1f}/s")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
