"""The MLflow pyfunc model of a labelwise export: MLflow's "models from code". ``src.export format=mlflow`` logs this
file with the exported Hugging Face directory as the artifact ``model``, and MLflow runs the file when it loads the
model, so it imports nothing from labelwise: serving needs mlflow, torch and transformers only.

The type hints are the signature, and MLflow checks requests against them: a list of texts in (REST:
``{"inputs": ["a text", ...]}``; a number, a null or a nested list is refused with HTTP 400), per text in order
``{"labels": [...], "scores": {label: probability}}`` out, decided by the model's own rule (``model.decide``: its
tuned thresholds), as ``src.predict`` writes them. A blank text gets no labels and no scores; an empty list is
refused.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pydantic
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer

BATCH_SIZE = 32
DECIMALS = 6  # as src.predict writes scores


class Prediction(pydantic.BaseModel):
    labels: list[str]
    scores: dict[str, float]


class LabelwiseModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        directory = context.artifacts["model"]
        self.model = AutoModelForSequenceClassification.from_pretrained(directory, trust_remote_code=True).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=True)  # it reads config.json
        self.names = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]

    def predict(self, model_input: list[str], params: dict[str, Any] | None = None) -> list[Prediction]:
        if not model_input:
            raise MlflowException.invalid_parameter_value(
                'no texts: send at least one, e.g. {"inputs": ["a text to label"]}')
        predictions = [Prediction(labels=[], scores={}) for _ in model_input]
        rows = sorted((i for i, text in enumerate(model_input) if text.strip()), key=lambda i: len(model_input[i]))
        for start in range(0, len(rows), BATCH_SIZE):  # texts of similar length together: little padding
            batch = rows[start:start + BATCH_SIZE]
            encoded = self.tokenizer([model_input[i] for i in batch], padding=True, truncation=True,
                                     max_length=self.model.config.max_seq_length, return_tensors="pt")
            with torch.inference_mode():
                scores = self.model.probabilities(self.model(encoded["input_ids"], encoded["attention_mask"]).logits)
            for row, probabilities, chosen in zip(batch, scores.tolist(), self.model.decide(scores).tolist()):
                predictions[row] = Prediction(
                    labels=[name for name, on in zip(self.names, chosen) if on],
                    scores={name: round(p, DECIMALS) for name, p in zip(self.names, probabilities)})
        return predictions


set_model(LabelwiseModel())
