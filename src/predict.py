"""python -m src.predict ckpt_path=PATH input=FILE|- [output=predictions.jsonl]: label texts with a trained model.

``ckpt_path`` is a checkpoint or a directory written by ``src.export`` (Hugging Face or ONNX). ``engine=onnx`` runs
ONNX Runtime (``quantize=int8`` for dynamic int8, the fastest on a CPU). Streams: reads ``chunk_size`` texts, scores
them, writes them, so any input size runs in bounded memory.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import chain, islice
from pathlib import Path
from typing import IO

import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from src import resolvers
from src.data.text_files import AUTO, check_encoding, codec_for, decode_error, resolve
from src.errors import ConfigError, DataError, reported_to_user
from src.inference import Predictor
from src.progress import progress
from src.schema import app, validate

resolvers.register()

STDIO = "-"
TABLES = {".csv": ",", ".tsv": "\t"}
ENCODING_KEY = "encoding"


def check_input(source: str | Path) -> None:
    if str(source) != STDIO and not Path(source).expanduser().is_file():
        raise DataError(
            f"input={source}: no such file. Pass input=<file> (one text per line, or .csv/.tsv/.jsonl) "
            "or input=- to read standard input."
        )


def iter_texts(source: str | Path, text_column: str = "text", encoding: str = AUTO) -> Iterator[str]:
    """The input's texts, one at a time, in order: plain lines (a file or ``-``), a CSV/TSV column or a JSONL key.
    A blank line yields ``""`` so the output stays aligned with the input. ``encoding``: the file's text encoding
    (``auto``: detected; standard input is read in the locale's encoding unless one is given)."""
    check_input(source)
    if str(source) == STDIO:
        encoding = check_encoding(encoding, ENCODING_KEY)
        stream = sys.stdin if encoding == AUTO else io.TextIOWrapper(sys.stdin.buffer, encoding=codec_for(encoding))
        return (line.rstrip("\r\n") for line in stream)
    path = Path(source).expanduser()
    encoding = resolve(path, encoding, ENCODING_KEY)
    suffix = path.suffix.lower()
    if suffix in TABLES:
        texts = _table_texts(path, encoding, TABLES[suffix], text_column)
    elif suffix == ".jsonl":
        texts = _jsonl_texts(path, encoding, text_column)
    else:
        texts = _plain_texts(path, encoding)
    return _decoded(texts, path, encoding)


def _decoded(texts: Iterator[str], path: Path, encoding: str) -> Iterator[str]:
    """``texts``, with a decoding failure turned into the error that says where and which ``encoding=`` to pass."""
    try:
        yield from texts
    except UnicodeDecodeError:
        raise decode_error(path, encoding, ENCODING_KEY) from None


def _plain_texts(path: Path, encoding: str) -> Iterator[str]:
    with path.open(encoding=codec_for(encoding)) as lines:
        yield from (line.rstrip("\n") for line in lines)


def _table_texts(path: Path, encoding: str, delimiter: str, text_column: str) -> Iterator[str]:
    with path.open(encoding=codec_for(encoding), newline="") as file:
        reader = csv.DictReader(file, delimiter=delimiter)
        columns = reader.fieldnames or []
        if text_column not in columns:
            raise DataError(
                f"input={path}: no column {text_column!r}; columns found: {columns}. Pass text_column=<one of them>."
            )
        try:
            yield from (row[text_column] or "" for row in reader)
        except csv.Error as error:
            raise DataError(f"input={path}, line {reader.line_num}: {error}") from None


def _jsonl_texts(path: Path, encoding: str, text_column: str) -> Iterator[str]:
    with path.open(encoding=codec_for(encoding)) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                yield ""
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"input={path}, line {number}: not valid JSON ({error.msg}).") from None
            if not isinstance(record, dict) or text_column not in record:
                keys = list(record) if isinstance(record, dict) else type(record).__name__
                raise DataError(
                    f"input={path}, line {number}: no key {text_column!r}; found: {keys}. "
                    "Pass text_column=<the key holding the text>."
                )
            text = record[text_column]
            if text is not None and not isinstance(text, str):
                raise DataError(f"input={path}, line {number}: {text_column!r} is a {type(text).__name__}, not text.")
            yield text or ""


def chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


@contextmanager
def open_output(target: str | Path) -> Iterator[IO[str]]:
    """``-`` is stdout; a file is written beside its final name and renamed only when complete, so a failure
    half-way never leaves a truncated predictions file that looks finished."""
    if str(target) == STDIO:
        yield sys.stdout
        return
    path = Path(target).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8") as file:
            yield file
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def predict_file(
    predictor: Predictor,
    input_path: str | Path,
    output_path: str | Path,
    batch_size: int = 128,
    chunk_size: int = 2048,
    text_column: str = "text",
    precision: str | None = None,
    show_progress: bool = False,
    encoding: str = AUTO,
) -> int:
    """Write one JSON line per input text (``{"text", "labels", "scores"}``) in input order; returns the count."""
    if batch_size < 1 or chunk_size < 1:
        raise ConfigError(f"batch_size and chunk_size must be positive, got {batch_size} and {chunk_size}.")
    count = 0
    try:
        pending = chunks(iter_texts(input_path, text_column, encoding), chunk_size)
        first = next(pending, [])  # a bad header or first record fails here: before any output or progress bar
        with open_output(output_path) as out, progress("predicting" if show_progress else None,
                                                       unit="texts") as advance:
            for chunk in chain([first] if first else [], pending):
                for record in predictor.predict(chunk, batch_size, precision):
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += len(chunk)
                advance(len(chunk))
            out.flush()
    except UnicodeDecodeError as error:
        raise DataError(f"input={input_path}: not {error.encoding} text ({error.reason} at byte {error.start} of a "
                        "block). Pass encoding=<its encoding> (utf-8, gb18030, latin-1, ...).") from None
    return count


def plain(value):
    """A command-line value as plain Python (lists and dicts out of OmegaConf)."""
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device}: no CUDA device is available here. Use device=cpu or device=auto.")
    return device


def predict(cfg: DictConfig) -> int:
    if not cfg.ckpt_path:
        raise ConfigError(
            "ckpt_path= is required: pass ckpt_path=<run dir>/checkpoints/last.ckpt (or best-*.ckpt), "
            "as written by python -m src.train."
        )
    if not cfg.input:
        raise ConfigError(
            "input= is required: pass input=<file> (text lines, .csv, .tsv or .jsonl) or input=- for stdin."
        )
    source = STDIO if str(cfg.input) == STDIO else to_absolute_path(str(cfg.input))
    output = cfg.output or (STDIO if source == STDIO else "predictions.jsonl")
    target = STDIO if str(output) == STDIO else to_absolute_path(str(output))
    check_input(source)  # before the (slow) model load
    encoding = check_encoding(cfg.get("encoding", AUTO), ENCODING_KEY)
    if source != STDIO:
        encoding = resolve(Path(source).expanduser(), encoding, ENCODING_KEY)
        if cfg.get("encoding", AUTO) == AUTO and encoding != "utf-8":  # worth saying: not the usual
            print(f"input {source}: text encoding {encoding} (detected; pass encoding=... to override)",
                  file=sys.stderr)
    predictor = Predictor.load(to_absolute_path(str(cfg.ckpt_path)), cfg.engine, cfg.quantize,
                               resolve_device(cfg.device), to_absolute_path(str(cfg.onnx_cache_dir)), cfg.max_f1_loss)
    predictor.use_thresholds(plain(cfg.get("thresholds")))
    count = predict_file(
        predictor,
        source,
        target,
        batch_size=cfg.batch_size,
        chunk_size=cfg.chunk_size,
        text_column=cfg.text_column,
        precision=cfg.precision,
        show_progress=target != STDIO,
        encoding=encoding,
    )
    if target != STDIO:
        print(f"wrote {count:,} predictions to {target}", file=sys.stderr)
    return count


@app("predict")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with reported_to_user():
        validate(cfg, "predict")
        predict(cfg)


if __name__ == "__main__":
    main()
