"""Which of the final responses of a forked request goes upstream (RFC 3261 §16.7 steps 6, 7).

Sans-IO and stateless: the proxy collects the branches' final responses and asks `best_response`.
"""

from __future__ import annotations

from collections.abc import Sequence

from .message import Response

__all__ = ["aggregate_challenges", "best_response", "preference"]

# Within a class, the answers that tell the caller most come first: those that let it resubmit
# the request (step 6: 401, 407, 415, 420, 484), then busy, declined, unavailable, cancelled,
# not found; a timeout last.
_ORDER = {401: -1, 407: -1, 415: -1, 420: -1, 484: -1,
          486: 0, 600: 0, 603: 1, 480: 2, 487: 3, 404: 4, 408: 9}  # fmt: skip
_CHALLENGES = ("www-authenticate", "proxy-authenticate")


def preference(status: int) -> int:
    """The rank of `status` within its class (lower is better)."""
    return _ORDER.get(status, 5)


def best_response(finals: Sequence[Response]) -> Response:
    """Step 6: a 6xx if any, else the lowest class, best ranked within it; a 503 becomes 500.
    Step 7: a 401/407 carries every branch's challenges. `finals` must not be empty; the
    answer is a copy when it had to change."""
    six = [r for r in finals if r.status >= 600]
    best = six[0] if six else min(finals, key=lambda r: (r.status // 100, preference(r.status)))
    if best.status == 503:
        best = best.copy()
        best.status, best.reason = 500, "Server Internal Error"
    if best.status in (401, 407):
        best = aggregate_challenges(best, finals)
    return best


def aggregate_challenges(best: Response, finals: Sequence[Response]) -> Response:
    """Step 7: a copy of `best` (one of `finals`) with the challenges of every 401/407 among
    `finals`, each once."""
    out = best.copy()
    seen = {(h[0], h[2]) for h in out.headers if h[0] in _CHALLENGES}
    for r in finals:
        if r is best or r.status not in (401, 407):
            continue
        for h in r.headers:
            if h[0] in _CHALLENGES and (h[0], h[2]) not in seen:
                seen.add((h[0], h[2]))
                out.add(h[1], h[2])
    return out
