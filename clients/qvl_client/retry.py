"""When to retry a request, and how long to wait.

Retried: connection errors (refused, reset, timed out, or cut before the answer was complete)
and HTTP 429, 502, 503, 504, waiting as the server's `Retry-After` says or with jittered
exponential backoff. Never retried: a stream whose first pieces were already handed to the
caller (the client raises StreamBroken), and any other status (a 400 is the caller's to fix).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import openai

RETRY_STATUS = frozenset({429, 502, 503, 504})
# vLLM's words when its engine process died under a request: the request was not served, and
# `qvl serve` restarts the engine, so it is safe and useful to retry (a 500 or a stream's error
# event from a server without qvl's guard, which turns these into 503)
ENGINE_DEAD = ("EngineCore encountered an issue", "EngineDeadError", "Engine loop is not running")


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    max_retry_after_s: float = 60.0

    def delay(self, attempt: int, error: BaseException, rng: random.Random = random) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        after = retry_after_seconds(error)
        if after is not None:
            return min(after, self.max_retry_after_s)
        cap = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return rng.uniform(cap / 2, cap)  # jitter: spread the clients of one outage apart


def is_retryable(error: BaseException) -> bool:
    if isinstance(error, (openai.APIConnectionError, StreamBroken)):  # incl. APITimeoutError
        return True
    if isinstance(error, openai.APIStatusError) and error.status_code in RETRY_STATUS:
        return True
    return isinstance(error, openai.APIError) and any(m in str(error) for m in ENGINE_DEAD)


def retry_after_seconds(error: BaseException) -> float | None:
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:  # an HTTP date: not worth parsing for a server this close
        return None


class StreamBroken(RuntimeError):
    """The connection failed after the answer had started. Raised to a caller who was being
    handed the pieces (it may have acted on them); a whole-result call retries it instead."""
