"""The LightningModule: loss, optimisation and the per-step numbers around an injected model artifact.

The network (:class:`~src.models.modeling_labelwise.LabelwiseForSequenceClassification`) is built outside and passed
in, lightning-hydra-template style; this module adds only what training needs. Validation and test steps emit
scores and targets; the evaluation callback (src/callbacks/evaluation.py) turns them into metrics, thresholds and
the report, in the same pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.strategies import DeepSpeedStrategy
from torch.distributed.fsdp import FullyShardedDataParallel

from src.labels import LabelSpace
from src.losses.base import Loss
from src.losses.rdrop import symmetric_kl
from src.metrics.counts import Counts, confusion
from src.models.modeling_labelwise import LabelwiseForSequenceClassification

#: Where a checkpoint keeps labelwise's own entries (the model's config and labels, the run's config ...).
CHECKPOINT_KEY = "labelwise"
#: Version of the checkpoint layout: 2 = the model artifact's config and weights under ``net.``.
CHECKPOINT_FORMAT = 2
MODEL_INPUTS = ("input_ids", "attention_mask", "embeddings")
# Lightning warns that an overridden clipping hook does not clip under DeepSpeed: ours leaves clipping to DeepSpeed's
# engine there, which clips by trainer.gradient_clip_val (see configure_gradient_clipping)
warnings.filterwarnings("ignore", message="Since DeepSpeed handles gradient clipping internally")


class ClassifierModule(L.LightningModule):
    """Trains ``net`` on ``labels``' targets with ``loss``; ``optimizer`` and ``scheduler`` are Hydra partials
    (``scheduler`` gets the total number of optimizer steps). Without loss/optimizer it only evaluates. ``rdrop > 0``
    trains with R-Drop at that weight (src/losses/rdrop.py); ``dropout_samples > 1`` with multi-sample dropout (Inoue
    2019): the head runs under that many dropout masks on one encoder pass and their losses are averaged."""

    def __init__(
        self,
        net: LabelwiseForSequenceClassification,
        labels: LabelSpace,
        loss: Loss | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., dict] | None = None,
        rdrop: float = 0.0,
        dropout_samples: int = 1,
    ):
        super().__init__()
        self.net = net
        self.labels = labels
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.rdrop = float(rdrop)
        self.dropout_samples = int(dropout_samples)
        self.train_counts: Counts | None = None
        self.distill: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # src/distill.py
        #: Entries of the run (its config, MLflow run id) every checkpoint carries; set by the trainer's RunMetadata.
        self.run_metadata: dict[str, Any] = {}
        self._step_gradient_norm: torch.Tensor | None = None  # gradient_norm() -> configure_gradient_clipping

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``[B, C]`` of a batch of token ids (or of pooled ``embeddings``)."""
        return self.net(**{key: batch[key] for key in MODEL_INPUTS if key in batch}).logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.rdrop:
            logits, twin = self({key: torch.cat([value, value]) for key, value in batch.items()
                                 if key in MODEL_INPUTS}).chunk(2)
            loss = (0.5 * (self._task_loss(logits, batch) + self._task_loss(twin, batch))
                    + self.rdrop * symmetric_kl(logits, twin, self.labels.exclusive))
        elif self.dropout_samples > 1:
            features, present = self.net.features(**{key: batch[key] for key in MODEL_INPUTS if key in batch})
            samples = [self.net.head(features, present) for _ in range(self.dropout_samples)]
            loss = torch.stack([self._task_loss(sample, batch) for sample in samples]).mean()
            logits = torch.stack(samples).mean(0)  # for the train counts only
        else:
            logits = self(batch)
            loss = self._task_loss(logits, batch)
        counts = confusion(batch["labels"].bool(), self.labels.decide(self.labels.scores(logits.detach())))
        self.train_counts = counts if self.train_counts is None else self.train_counts + counts
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=len(logits), prog_bar=True)
        return loss

    def _task_loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """The loss against the labels, mixed with the teacher's term under distillation (each R-Drop pass gets
        both)."""
        loss = self.loss(logits, batch["labels"])
        return loss if self.distill is None else self.distill(loss, logits, batch["index"])

    def on_train_epoch_start(self) -> None:
        self.train_counts = None

    def on_train_epoch_end(self) -> None:
        """Train macro/micro-F1 at the default decision rule, from the epoch's counts summed over ranks (running
        weights, dropout on: a check for under- and overfitting, not a score)."""
        if self.train_counts is None:
            return
        reduce = self.trainer.strategy.reduce
        counts = Counts(*(reduce(x.float(), reduce_op="sum") for x in (self.train_counts.tp, self.train_counts.fp,
                                                                         self.train_counts.fn))).numpy()
        f1 = counts.f1()
        self.log_dict({"train/macro_f1": float(self.labels.macro(f1, counts.tp, counts.fp, counts.fn)),
                       "train/micro_f1": float(counts.micro_f1())})

    def _evaluation_step(self, batch: dict, prefix: str) -> dict[str, torch.Tensor]:
        logits = self(batch)
        if self.loss is not None:
            self.log(f"{prefix}/loss", self.loss(logits, batch["labels"]), on_epoch=True, batch_size=len(logits),
                     sync_dist=True)
        return {"logits": logits, "scores": self.labels.scores(logits), "targets": batch["labels"],
                "index": batch["index"]}

    def validation_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluation_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluation_step(batch, self.test_prefix)

    @property
    def test_prefix(self) -> str:
        """The name test metrics are logged under: the evaluated split's (``src.eval split=val`` logs ``val/...``)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        return getattr(datamodule, "test_split", "test")

    # ---------------------------------------------------------------- optimisation

    def _grad_scaler(self):
        return getattr(self.trainer.precision_plugin, "scaler", None)

    def configure_optimizers(self):
        # fp16 loss scaling: Lightning must unscale before clipping, which a fused optimizer does not allow;
        # ZeRO-Offload steps the optimizer on the CPU, with DeepSpeed's own CPU Adam
        optimizer = self.optimizer_factory(encoder=self.net.encoder, head=self.net.head,
                                           fused=self._grad_scaler() is None, offload=self._offloads_optimizer())
        if self.scheduler_factory is None:
            return optimizer
        total_steps = int(self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer, total_steps=total_steps)}

    def _offloads_optimizer(self) -> bool:
        strategy = self.trainer.strategy
        return isinstance(strategy, DeepSpeedStrategy) and bool(
            strategy.config.get("zero_optimization", {}).get("offload_optimizer"))

    def gradient_norm(self) -> torch.Tensor | None:
        """The global L2 norm of the gradients now in the parameters (None when there are none: sharded strategies
        keep them in their engine). The health callback asks for it before clipping, which then reuses it instead of
        another pass over every gradient (~2% of a MiniLM step on CPU)."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        self._step_gradient_norm = torch.nn.utils.get_total_norm(grads) if grads else None
        return self._step_gradient_norm

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Without a grad scaler (fp32, bf16) gradients are already real-valued: clip them directly, which
        Lightning's mixed-precision plugin refuses to do for fused optimizers. Under fp16 Lightning unscales
        first, then clips (never clip scaled gradients). DeepSpeed clips inside its engine (Lightning passes
        ``trainer.gradient_clip_val`` as its ``gradient_clipping``; the gradients are not in the parameters here);
        under FSDP the norm is the sharded root module's, over all ranks' shards."""
        norm, self._step_gradient_norm = self._step_gradient_norm, None  # this step's, when the health callback ran
        if isinstance(self.trainer.strategy, DeepSpeedStrategy):
            return
        if not gradient_clip_val or self._grad_scaler() is not None:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(self.parameters(), gradient_clip_val)
        elif isinstance(self.trainer.model, FullyShardedDataParallel):
            self.trainer.model.clip_grad_norm_(gradient_clip_val)
        else:
            clip_grad_norm(self.parameters(), gradient_clip_val, norm)

    # ---------------------------------------------------------------- checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The artifact's config (with the thresholds tuned for these weights) beside its weights, as plain types:
        a checkpoint loads with ``weights_only=True`` and rebuilds the model without its training code."""
        checkpoint.setdefault(CHECKPOINT_KEY, {}).update(
            format=CHECKPOINT_FORMAT, net_config=self.net.config.to_dict(), **self.run_metadata)
        if "callbacks" not in checkpoint:  # weights only: Lightning skips the callbacks' checkpoint hooks
            self._store_averages(checkpoint)

    def _store_averages(self, checkpoint: dict[str, Any]) -> None:
        """A weight-averaging callback (``callbacks.ema``) puts its average in ``state_dict`` from its own
        checkpoint hook, which Lightning calls only for full checkpoints; without this a weights-only best
        checkpoint, chosen by validating the average, would hold the live weights. The live weights and the
        averager's state it keeps beside them are for resuming, which a weights-only checkpoint cannot."""
        for callback in self.trainer.callbacks:
            if isinstance(callback, WeightAveraging):
                callback.on_save_checkpoint(self.trainer, self, checkpoint)
                checkpoint.pop("current_model_state", None)
                checkpoint.pop("averaging_state", None)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint[CHECKPOINT_KEY]["net_config"]
        self.net.config.thresholds = stored.get("thresholds")
        self.net.config.temperature = stored.get("temperature")


def clip_grad_norm(parameters, max_norm: float, norm: torch.Tensor | None = None) -> torch.Tensor:
    """``clip_grad_norm_`` that skips the rescaling pass when the norm is already within ``max_norm``, and takes the
    gradients' ``norm`` when it is known already.

    torch always multiplies by ``min(1, max_norm / norm)`` to avoid a host sync; on CPU there is nothing to
    sync, and most fine-tuning steps are not clipped, so checking first saves a pass over every gradient.
    """
    parameters = [p for p in parameters if p.grad is not None]
    if norm is None:
        norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
    if norm.device.type != "cpu" or norm > max_norm:
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)
    return norm
