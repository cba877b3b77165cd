"""A seed ensemble as one model (``ensemble.members=K``, :mod:`src.ensemble`): K trained members that read the same
input, their probabilities averaged.

Its ``config`` is a member's (labels, tokenizer, truncation, chunking) with the ensemble's own decision thresholds
(tuned on the averaged val scores) and, under ``ensemble``, every member's stored config. ``forward`` returns the
logits of the averaged probabilities (sigmoid: ``logit(mean p)``, softmax: ``log(mean p)``), so everything that turns
logits into scores (:class:`~src.inference.Predictor`, ``src.eval``, the ONNX graph) takes it as it takes one model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from src.models.modeling_labelwise import SINGLE_LABEL, LabelwiseConfig, LabelwiseForSequenceClassification

# averaged probabilities are kept this far from 0 and 1 so their logits stay finite (sigmoid gives them back to 1e-7)
EPSILON = 1e-7


class LabelwiseEnsemble(nn.Module):
    def __init__(self, config: LabelwiseConfig, members: list[LabelwiseForSequenceClassification]):
        super().__init__()
        self.config = config
        self.members = nn.ModuleList(members)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **_) -> SequenceClassifierOutput:
        """Each member's probabilities (its own temperature applied, in eval mode), averaged, as logits."""
        mean = torch.stack([member.probabilities(member(input_ids=input_ids, attention_mask=attention_mask).logits)
                            for member in self.members]).mean(0)
        mean = mean.clamp(EPSILON, 1 - EPSILON)
        logits = mean.log() if self.config.problem_type == SINGLE_LABEL else mean.log() - (-mean).log1p()
        return SequenceClassifierOutput(logits=logits)


def ensemble_config(members: list[Mapping[str, Any]], thresholds: dict | None) -> dict[str, Any]:
    """The stored config of an ensemble of models with these stored configs, deciding with ``thresholds``."""
    return {**members[0], "thresholds": thresholds, "temperature": None, "ensemble": [dict(m) for m in members]}


def from_stored(config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> LabelwiseEnsemble:
    """The ensemble an ``ensemble.ckpt`` describes: member i from ``config["ensemble"][i]`` and the weights under
    ``members.<i>.``."""
    from src.models.build import from_stored as member_from_stored

    members = []
    for i, stored in enumerate(config["ensemble"]):
        prefix = f"members.{i}."
        members.append(member_from_stored(stored, {key.removeprefix(prefix): value for key, value
                                                   in state_dict.items() if key.startswith(prefix)}))
    return LabelwiseEnsemble(LabelwiseConfig.from_dict(dict(config)), members).eval()
