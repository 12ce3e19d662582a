"""What one step of the packed batch feeds the model: pure decisions over token counts.

Every decoding sequence (one token pending) feeds its token; the rest of the step's token budget goes to
the sequences still prefilling, oldest first, in chunks. A long prompt is spread over several steps, so
it never stalls the running streams for the whole of its prefill, and a burst of prompts is prefilled
in arrival order: the first ones start streaming while later ones are still being read.
"""

from __future__ import annotations


def step_tokens(pending: list[int], budget: int) -> list[int]:
    """Tokens each sequence (in admission order) feeds this step, from its count of ``pending`` tokens.

    Decoding sequences always feed their one token, even past the budget; prefill gets what is left,
    but never less than a quarter of the budget, so a large batch cannot starve new prompts.
    """
    decoding = sum(1 for p in pending if p == 1)
    room = max(budget - decoding, budget // 4, 1)
    feed = []
    for p in pending:
        if p <= 1:
            feed.append(p)
            continue
        n = min(p, room)
        feed.append(n)
        room -= n
    return feed
