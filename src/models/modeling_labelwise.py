"""The labelwise model: any Hugging Face encoder + pooling + a classification head, with its labels and decision
thresholds in its config. The class that trains is the class that ships: checkpoints hold its weights and config,
and an export is its ``save_pretrained`` directory.

``save_pretrained`` copies this file into the exported directory (loaded with ``trust_remote_code=True``), so it
imports nothing from the project: only torch and transformers. Stock ``*ForSequenceClassification`` heads classify
from the [CLS] token, often through an extra dense layer; our default pooling is a masked mean, which none of them
computes.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel, TextClassificationPipeline
from transformers.modeling_outputs import SequenceClassifierOutput

POOLINGS = ("mean", "cls", "cls_mean", "pooler")
AGGREGATES = ("mean", "max", "attention")
SINGLE_LABEL = "single_label_classification"


class LabelwiseConfig(PretrainedConfig):
    """The encoder's own config nested under ``encoder``; how to pool; the head (``head_hidden`` 0: dropout + linear,
    >0: a hidden GELU layer of that width in front); ``label_space`` (task, names, training counts); ``thresholds``
    (per-label decision thresholds, None: 0.5); ``temperature`` (per-label divisors of the logits fitted on
    validation by ``calibration=temperature``, None: 1); ``base_model`` (where the encoder and tokenizer came from) and
    ``max_seq_length`` (the truncation length in tokens used in training; ``max_length`` would be read as a
    generation setting). ``chunking`` makes the model hierarchical (``model=hierarchical``): a text is read as up
    to ``max_chunks`` windows of ``max_seq_length`` tokens overlapping by ``stride``, each pooled, then aggregated
    (``aggregate``: mean, max or attention) into one vector for the head; ``max_chunks_per_batch`` caps the windows
    one batch encodes. Labels also go into Hugging Face's ``id2label`` and ``problem_type``, which ``pipeline()``
    reads."""

    model_type = "labelwise"

    def __init__(
        self,
        encoder: dict | PretrainedConfig | None = None,
        pooling: str = "mean",
        classifier_dropout: float = 0.1,
        head_hidden: int = 0,
        label_space: dict | None = None,
        thresholds: dict | None = None,
        temperature: list[float] | None = None,
        base_model: str | None = None,
        max_seq_length: int | None = None,
        chunking: dict | None = None,
        **kwargs,
    ):
        if isinstance(encoder, dict):
            encoder = AutoConfig.for_model(**encoder)
        self.encoder = encoder
        self.pooling = pooling
        self.classifier_dropout = classifier_dropout
        self.head_hidden = head_hidden
        self.label_space = label_space
        self.thresholds = thresholds
        self.temperature = temperature
        self.base_model = base_model
        self.max_seq_length = max_seq_length
        self.chunking = chunking
        super().__init__(**kwargs)


def pooled_width(hidden_size: int, pooling: str) -> int:
    """Width of :func:`pool`'s output: ``cls_mean`` concatenates two vectors."""
    return hidden_size * (2 if pooling == "cls_mean" else 1)


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooler_output: torch.Tensor | None, mode: str) -> torch.Tensor:
    """Sentence vector from token states: masked mean, the [CLS] state, both concatenated, or BERT's pooler
    (trained by next-sentence prediction; untrained in sentence-transformers checkpoints such as MiniLM)."""
    if mode == "pooler":
        return pooler_output
    cls = hidden[:, 0]
    if mode == "cls":
        return cls
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return mean if mode == "mean" else torch.cat([cls, mean], dim=-1)


class ClassificationHead(nn.Module):
    """Dropout + linear; with ``hidden > 0`` dropout + linear + GELU + dropout + linear. With ``aggregate`` (a
    hierarchical model) it first turns a document's chunk vectors ``[B, K, width]`` into one: their mean, their
    maximum, or an attention-weighted sum (a learned score per chunk, softmax over the document's chunks). The
    aggregation lives in the head so that it trains at the head's learning rate."""

    def __init__(self, width: int, num_labels: int, dropout: float, hidden: int = 0, aggregate: str | None = None):
        super().__init__()
        self.width = width  # of the pooled input
        self.aggregate = aggregate
        self.chunk_score = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1)) \
            if aggregate == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(width, hidden) if hidden else None
        self.activation = nn.GELU() if hidden else None
        self.hidden_dropout = nn.Dropout(dropout) if hidden else None
        self.out_proj = nn.Linear(hidden or width, num_labels)

    def document(self, chunks: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """``[B, width]`` from chunk vectors ``[B, K, width]`` of which ``present`` ``[B, K]`` are real (a batch's
        documents can differ in their number of chunks; the rest is padding and never counts)."""
        weights = present.unsqueeze(-1).to(chunks.dtype)
        if self.aggregate == "mean":
            return (chunks * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        if self.aggregate == "max":
            return chunks.masked_fill(~present.unsqueeze(-1), torch.finfo(chunks.dtype).min).amax(1)
        scores = self.chunk_score(chunks)  # bf16 under autocast: its own dtype's lowest value
        scores = scores.masked_fill(~present.unsqueeze(-1), torch.finfo(scores.dtype).min)
        return (scores.softmax(1) * chunks).sum(1)

    def forward(self, pooled: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        x = self.document(pooled, present) if present is not None else pooled
        x = self.dropout(x)
        if self.dense is not None:
            x = self.hidden_dropout(self.activation(self.dense(x)))
        return self.out_proj(x)


class LabelwiseForSequenceClassification(PreTrainedModel):
    """Logits ``[B, num_labels]``: sigmoid them for multi-label, softmax for multi-class (``config.problem_type``),
    and compare with ``config.thresholds`` (None: 0.5) to decide labels. In eval mode the logits are divided by
    ``config.temperature`` when one was fitted.

    ``forward`` takes token ids, or ``embeddings`` (already pooled sentence vectors, as a frozen-encoder probe trains
    on) to run the head alone. ``encoder`` passes an already built encoder (pretrained weights) instead of building
    one from ``config.encoder``.
    """

    config_class = LabelwiseConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True

    def __init__(self, config: LabelwiseConfig, encoder: PreTrainedModel | None = None):
        super().__init__(config)
        if config.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {config.pooling!r}")
        self.encoder = encoder if encoder is not None else AutoModel.from_config(config.encoder)
        if config.pooling != "pooler" and getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler = None  # unused weights would break DDP and cost a matmul per batch
        chunking = config.chunking or {}
        if chunking and chunking.get("aggregate") not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {chunking.get('aggregate')!r}")
        width = pooled_width(config.encoder.hidden_size, config.pooling)
        self.head = ClassificationHead(width, config.num_labels, config.classifier_dropout, config.head_hidden,
                                       chunking.get("aggregate"))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """The head keeps torch's default initialisation (a pretrained encoder initialises itself)."""

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled sentence vectors ``[B, width]``; for chunked documents ``[B, K, L]`` the chunk vectors
        ``[B, K, width]``."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if input_ids.dim() == 3:
            return self.embed(input_ids.flatten(0, 1), attention_mask.flatten(0, 1)).unflatten(0, input_ids.shape[:2])
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return pool(out.last_hidden_state, attention_mask, getattr(out, "pooler_output", None), self.config.pooling)

    def features(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 embeddings: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What the head reads: the pooled vectors (``embeddings`` as given, else the encoder's) and, for chunked
        documents, which chunks are present (None otherwise)."""
        present = None
        if embeddings is None and self.config.chunking:
            if input_ids.dim() == 2:
                input_ids = input_ids.unsqueeze(1)
                attention_mask = None if attention_mask is None else attention_mask.unsqueeze(1)
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            present = attention_mask[..., 0] > 0
            attention_mask = torch.cat([torch.ones_like(attention_mask[..., :1]), attention_mask[..., 1:]], -1)
        if embeddings is None:
            embeddings = self.embed(input_ids, attention_mask)
        return embeddings, present

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        embeddings: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        """``token_type_ids`` and other tokenizer outputs are accepted and ignored: the model was trained on
        single texts without them. ``labels`` (0/1 ``[B, C]`` for multi-label, class ids for multi-class) give
        Hugging Face's usual loss, so the model also trains in a Hugging Face Trainer.

        A hierarchical model (``config.chunking``) takes documents as chunks ``[B, K, L]`` (2-D ids: one chunk per
        document). A chunk whose mask is all zeros is padding (its document has fewer chunks): it is encoded with
        its first token visible, so every row stays finite, and left out of the aggregation."""
        embeddings, present = self.features(input_ids, attention_mask, embeddings)
        logits = self.head(embeddings, present)
        if self.config.temperature is not None and not self.training:
            # calibrated scores for every consumer (pipeline(), ONNX, MLflow); training sees the raw logits
            logits = logits / torch.tensor(self.config.temperature, dtype=logits.dtype, device=logits.device)
        loss = None
        if labels is not None:
            if self.config.problem_type == "multi_label_classification":
                loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())
            else:
                loss = nn.functional.cross_entropy(logits.float(), labels.long())
        if return_dict is False:
            return (logits,) if loss is None else (loss, logits)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Float32 scores: a softmax for multi-class (``problem_type`` single_label_classification), independent
        sigmoids otherwise."""
        logits = logits.float()
        return logits.softmax(-1) if self.config.problem_type == SINGLE_LABEL else logits.sigmoid()

    def decide(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Bool ``[B, C]`` decisions by the rule labelwise evaluated the model with, so a user of the exported
        model (or a served one) labels texts as ``src.predict`` does: the arg-max for multi-class; for multi-label
        ``probability > threshold`` per label (``config.thresholds``, 0.5 without) and, when the thresholds say
        ``at_least_one``, a row's top label where none passes; with ``top_k`` (``src.thresholds policy=top_k``)
        a row's k best-scoring labels. Compared in float64, as labelwise does."""
        top = torch.zeros_like(probabilities, dtype=torch.bool).scatter_(-1, probabilities.argmax(-1, keepdim=True),
                                                                          True)
        if self.config.problem_type == SINGLE_LABEL:
            return top
        stored = self.config.thresholds or {}
        if stored.get("top_k"):
            best = torch.argsort(-probabilities.double(), dim=-1, stable=True)[..., : stored["top_k"]]
            return torch.zeros_like(probabilities, dtype=torch.bool).scatter_(-1, best, True)
        cut = torch.tensor(stored.get("per_label") or [0.5] * probabilities.shape[-1], dtype=torch.float64,
                           device=probabilities.device)
        decisions = probabilities.double() > cut
        if stored.get("at_least_one"):
            decisions |= top & ~decisions.any(-1, keepdim=True)
        return decisions


class LabelwisePipeline(TextClassificationPipeline):
    """What ``pipeline("text-classification", model=<export>, trust_remote_code=True)`` builds for an export (its
    config names this class under ``custom_pipelines``): the stock pipeline, except that texts are truncated at the
    model's ``max_seq_length`` as in training unless the caller passes ``truncation``/``max_length`` itself (the
    stock pipeline does not truncate, so a long text would be scored on more tokens than the model was trained on,
    or fail past the encoder's position limit). A hierarchical model's text becomes its windows ``[1, K, L]``, cut
    as labelwise cuts them in training."""

    def preprocess(self, inputs, **tokenizer_kwargs):
        chunking = self.model.config.chunking
        if chunking and isinstance(inputs, str):
            windows = self.tokenizer(inputs, truncation=True, max_length=self.model.config.max_seq_length,
                                     stride=chunking["stride"], return_overflowing_tokens=True)["input_ids"]
            windows = windows[: chunking["max_chunks"]]
            width = max(map(len, windows))
            input_ids = torch.full((1, len(windows), width), self.tokenizer.pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros((1, len(windows), width), dtype=torch.long)
            for k, window in enumerate(windows):
                input_ids[0, k, : len(window)] = torch.tensor(window)
                attention_mask[0, k, : len(window)] = 1
            return {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.model.config.max_seq_length:
            tokenizer_kwargs.setdefault("truncation", True)
            tokenizer_kwargs.setdefault("max_length", self.model.config.max_seq_length)
        return super().preprocess(inputs, **tokenizer_kwargs)
