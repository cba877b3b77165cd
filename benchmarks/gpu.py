"""Training speed and memory of big encoders on one CUDA GPU: one command, one table.

    python benchmarks/gpu.py [--sections hf,zero,lora] [--batch-size 128] [--max-length 128] [--steps 60]

Random-init encoders of the real sizes (nothing is downloaded), random token ids of lengths spread over
[max_length / 4, max_length] (so length grouping matters), a 20-label multi-label head, bf16:

(a) ``hf``: BERT-base, labelwise (ClassifierModule + Lightning, fused AdamW, SDPA, length-grouped batches) against
    the HF Trainer tuned the same way (bf16, ``train_sampling_strategy="group_by_length"``, fused AdamW) on the same
    model class and data: samples/s, tokens/s (non-pad), MFU, peak memory;
(b) ``zero``: DeBERTa-v3-large with gradient checkpointing under DeepSpeed ZeRO-2 and ZeRO-3 (needs deepspeed);
(c) ``lora``: BERT-base and DeBERTa-v3-large, LoRA against full fine-tuning.

Each measurement runs in its own process (clean peak memory, one DeepSpeed init each); the first ``--warmup`` steps
are not timed. MFU counts 6 x parameters x tokens plus attention (12 x layers x hidden x length per token) against
the GPU's dense bf16 peak (``--peak-tflops``, else looked up from the device name). Without a GPU it exits with a
message (``--allow-cpu`` runs tiny sizes on the CPU, to check the script itself).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NUM_LABELS = 20
SIZES = {  # model type and config of the shipped encoders' sizes; "tiny" checks the script on a CPU
    "bert-base": ("bert", {}),
    "deberta-v3-large": ("deberta-v2", {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                                        "intermediate_size": 4096, "relative_attention": True, "position_buckets": 256,
                                        "max_relative_positions": -1, "pos_att_type": ["p2c", "c2p"],
                                        "norm_rel_ebd": "layer_norm", "share_att_key": True,
                                        "position_biased_input": False, "type_vocab_size": 0, "vocab_size": 128100}),
    "tiny": ("bert", {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}),
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "A10": 125.0, "L4": 121.0,
                    "L40": 181.0, "4090": 165.0, "3090": 71.0}


def save_encoder(size: str, directory: Path) -> str:
    from transformers import AutoConfig, AutoModel

    model_type, config = SIZES[size]
    AutoModel.from_config(AutoConfig.for_model(model_type, **config)).save_pretrained(directory)
    return str(directory)


def random_batches(args, vocab: int, count: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``count`` batches of random ids, lengths uniform in [max_length/4, max_length], each batch grouped by length
    (rows sorted by length, a pool of 50 batches at a time, as labelwise's length-grouped sampler does)."""
    generator = torch.Generator().manual_seed(seed)
    rows = count * args.batch_size
    lengths = torch.randint(args.max_length // 4, args.max_length + 1, (rows,), generator=generator)
    order = torch.cat([chunk[torch.argsort(lengths[chunk])] for chunk in torch.arange(rows).split(
        50 * args.batch_size)])
    batches = []
    for index in order.split(args.batch_size):
        width = int(lengths[index].max())
        mask = (torch.arange(width)[None, :] < lengths[index][:, None]).long()
        ids = torch.randint(5, vocab, (len(index), width), generator=generator) * mask
        labels = (torch.rand(len(index), NUM_LABELS, generator=generator) < 0.1).float()
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels, "index": index})
    return batches


def flops_per_token(net, max_length: int) -> float:
    config = net.config.encoder
    params = sum(p.numel() for name, p in net.named_parameters() if "embeddings" not in name)
    return 6 * params + 12 * config.num_hidden_layers * config.hidden_size * max_length


class Timer:
    """Wall time and non-pad tokens of the steps after ``warmup``."""

    def __init__(self, warmup: int):
        self.warmup, self.steps, self.tokens, self.start = warmup, 0, 0, None

    def step(self, tokens: int) -> None:
        self.steps += 1
        if self.steps == self.warmup:
            torch.cuda.synchronize() if torch.cuda.is_available() else None
            self.start = time.perf_counter()
        elif self.steps > self.warmup:
            self.tokens += tokens

    def result(self, args, net) -> dict:
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        seconds = time.perf_counter() - self.start
        timed = self.steps - self.warmup
        tokens_per_s = self.tokens / seconds
        peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name()), None)
        return {"samples_per_s": timed * args.batch_size / seconds, "tokens_per_s": tokens_per_s,
                "mfu": tokens_per_s * flops_per_token(net, args.max_length) / (peak * 1e12) if peak else None,
                "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None}


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def net_for(args, encoder: str, peft: str | None = None, checkpointing: bool = False):
    from src.labels import LabelSpace
    from src.models.build import classifier

    labels = LabelSpace("multilabel", tuple(f"l{i}" for i in range(NUM_LABELS)), (10,) * NUM_LABELS, 100)
    net = classifier(encoder, labels=labels, pooling="cls", peft=peft, gradient_checkpointing=checkpointing)
    return net, labels


def run_labelwise(args, encoder: str, peft: str | None = None, strategy: str = "auto",
                  checkpointing: bool = False) -> dict:
    import lightning as L
    from torch.utils.data import DataLoader

    from src.losses.bce import BinaryCrossEntropy
    from src.models.module import ClassifierModule
    from src.models.optimization import adamw

    net, labels = net_for(args, encoder, peft, checkpointing)
    timer = Timer(args.warmup)

    class Timing(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            timer.step(int(batch["attention_mask"].sum()))

    module = ClassifierModule(net, labels, loss=BinaryCrossEntropy(),
                              optimizer=lambda **kw: adamw(lr=2e-5, weight_decay=0.01, **kw))
    if strategy.startswith("zero"):
        from lightning.pytorch.strategies import DeepSpeedStrategy

        strategy = DeepSpeedStrategy(stage=int(strategy[-1]))
    on_gpu = torch.cuda.is_available()
    trainer = L.Trainer(accelerator="gpu" if on_gpu else "cpu", devices=1, strategy=strategy,
                        precision="bf16-mixed", max_steps=args.steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0,
                        callbacks=[Timing()])
    batches = random_batches(args, net.config.encoder.vocab_size, args.steps)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None, shuffle=False, pin_memory=on_gpu))
    return timer.result(args, net)


def run_hf_trainer(args, encoder: str) -> dict:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    net, _ = net_for(args, encoder)
    timer = Timer(args.warmup)
    rows = [{"input_ids": ids[mask.bool()].tolist(), "labels": target}
            for batch in random_batches(args, net.config.encoder.vocab_size, args.steps)
            for ids, mask, target in zip(batch["input_ids"], batch["attention_mask"], batch["labels"])]

    def collate(items):
        width = max(len(item["input_ids"]) for item in items)
        ids = torch.zeros(len(items), width, dtype=torch.long)
        for row, item in enumerate(items):
            ids[row, : len(item["input_ids"])] = torch.tensor(item["input_ids"])
        return {"input_ids": ids, "attention_mask": (ids != 0).long(),
                "labels": torch.stack([item["labels"] for item in items])}

    tokens_per_step = sum(len(row["input_ids"]) for row in rows) // args.steps  # the same rows, in other batches

    class Timing(TrainerCallback):
        def on_step_end(self, arguments, state, control, **kwargs):
            timer.step(tokens_per_step)

    with tempfile.TemporaryDirectory() as output:
        arguments = TrainingArguments(output_dir=output, per_device_train_batch_size=args.batch_size,
                                      max_steps=args.steps, learning_rate=2e-5, weight_decay=0.01,
                                      bf16=torch.cuda.is_available(), optim="adamw_torch_fused",
                                      train_sampling_strategy="group_by_length", report_to=[], save_strategy="no",
                                      logging_strategy="no", max_grad_norm=1.0, dataloader_pin_memory=False,
                                      use_cpu=not torch.cuda.is_available())
        Trainer(model=net, args=arguments, train_dataset=rows, data_collator=collate, callbacks=[Timing()]).train()
    return timer.result(args, net)


MEASUREMENTS = {
    "hf/labelwise": ("hf", "bert-base", lambda a, e: run_labelwise(a, e)),
    "hf/hf-trainer": ("hf", "bert-base", run_hf_trainer),
    "zero/zero2+ckpt": ("zero", "deberta-v3-large", lambda a, e: run_labelwise(a, e, strategy="zero2",
                                                                                 checkpointing=True)),
    "zero/zero3+ckpt": ("zero", "deberta-v3-large", lambda a, e: run_labelwise(a, e, strategy="zero3",
                                                                                 checkpointing=True)),
    "lora/bert-base full": ("lora", "bert-base", lambda a, e: run_labelwise(a, e)),
    "lora/bert-base lora": ("lora", "bert-base", lambda a, e: run_labelwise(a, e, peft="lora")),
    "lora/deberta-v3-large full": ("lora", "deberta-v3-large", lambda a, e: run_labelwise(a, e)),
    "lora/deberta-v3-large lora": ("lora", "deberta-v3-large", lambda a, e: run_labelwise(a, e, peft="lora")),
}


def measure_one(args) -> None:
    """Child process: one measurement, its result as the last stdout line."""
    _, size, run = MEASUREMENTS[args.only]
    with tempfile.TemporaryDirectory() as directory:
        encoder = save_encoder("tiny" if args.allow_cpu else size, Path(directory))
        print(json.dumps(run(args, encoder)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="hf,zero,lora")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak")
    parser.add_argument("--allow-cpu", action="store_true", help="tiny sizes on the CPU: checks the script only")
    parser.add_argument("--only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        return measure_one(args)
    if not torch.cuda.is_available() and not args.allow_cpu:
        sys.exit("benchmarks/gpu.py measures on a CUDA GPU and torch sees none here (torch.cuda.is_available() is "
                 "False): nothing was measured. On a GPU machine: python benchmarks/gpu.py")
    sections = set(args.sections.split(","))
    has_deepspeed = subprocess.run([sys.executable, "-c", "import deepspeed"], capture_output=True).returncode == 0
    print(f"device: {device_name()}  batch {args.batch_size} x max length {args.max_length}, {args.steps} steps "
          f"({args.warmup} warm-up), bf16")
    print(f"{'measurement':32} {'samples/s':>10} {'tokens/s':>10} {'MFU':>6} {'peak GiB':>9}")
    results = {}
    for name, (section, _, _) in MEASUREMENTS.items():
        if section not in sections:
            continue
        if section == "zero" and (not has_deepspeed or args.allow_cpu):
            print(f"{name:32} skipped: needs deepspeed on a GPU (pip install -e '.[deepspeed]')")
            continue
        child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", name], capture_output=True,
                               text=True, cwd=ROOT)
        if child.returncode != 0:
            print(f"{name:32} failed:\n{child.stderr[-3000:]}")
            continue
        result = results[name] = json.loads(child.stdout.strip().splitlines()[-1])
        mfu = f"{result['mfu']:.1%}" if result["mfu"] is not None else "-"
        memory = f"{result['peak_memory_gib']:.2f}" if result["peak_memory_gib"] is not None else "-"
        print(f"{name:32} {result['samples_per_s']:10.1f} {result['tokens_per_s']:10.0f} {mfu:>6} {memory:>9}")
    if "hf/labelwise" in results and "hf/hf-trainer" in results:
        speedup = results["hf/labelwise"]["samples_per_s"] / results["hf/hf-trainer"]["samples_per_s"]
        print(f"labelwise vs tuned HF Trainer (BERT-base): {speedup:.2f}x samples/s")


if __name__ == "__main__":
    main()
