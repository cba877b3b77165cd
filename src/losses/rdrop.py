"""R-Drop (Liang et al. 2021): each batch goes through the network twice, under two dropout masks, and the loss adds
``alpha`` times the symmetric KL divergence between the two predictions, so the model learns to give the same
answer whichever sub-network dropout picks. The two passes run as one batch of twice the rows (bigger matrix
products, one forward), which costs less than two steps.
"""

from __future__ import annotations

import torch


def symmetric_kl(a: torch.Tensor, b: torch.Tensor, exclusive: bool) -> torch.Tensor:
    """``(KL(p||q) + KL(q||p)) / 2`` between the predictions of logits ``a`` and ``b`` ``[B, C]``, in float32.

    Both directions together reduce to ``(p - q) * (a - b)`` summed over the outcomes of each distribution: per label
    for sigmoids (two outcomes, whose log-odds are the logits), per row for a softmax (the log-normaliser cancels
    because ``p`` and ``q`` both sum to 1). No logarithm of a probability is taken, so it is exact at saturated
    scores. Averaged like the task losses: over rows and labels for sigmoids, over rows for a softmax.
    """
    a, b = a.float(), b.float()
    if exclusive:
        p, q = torch.softmax(a, -1), torch.softmax(b, -1)
        return 0.5 * ((p - q) * (a - b)).sum(-1).mean()
    return 0.5 * ((torch.sigmoid(a) - torch.sigmoid(b)) * (a - b)).mean()
