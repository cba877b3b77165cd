"""Text files in the user's encoding: given (``utf-8``, ``gb18030``, ``latin-1``, any Python codec) or detected
(``auto``), and one clear error naming the file, the byte offset, the line and the fix when the bytes do not decode.

Detection: a sample that decodes as UTF-8 is UTF-8 (ASCII included); otherwise charset-normalizer decides. Western
single-byte encodings (Latin-1, Windows-1252, ISO-8859-x) cannot be told apart reliably from the bytes alone:
charset-normalizer often names a rarer sibling (ISO-8859-10 for French text), so when Windows-1252 (Latin-1's
letters plus typographic quotes and the euro sign) decodes the sample about as cleanly, it is preferred.
"""

from __future__ import annotations

import codecs
import logging
from pathlib import Path

from src.errors import ConfigError, DataError

log = logging.getLogger(__name__)

AUTO = "auto"
SAMPLE_BYTES = 256 * 1024  # what detection reads: charset-normalizer samples it further
_BLOCK = 1024 * 1024
_NEAR_TIE = 0.05  # chaos (charset-normalizer's mess ratio) within which Windows-1252 is preferred
_EXAMPLES = "utf-8, gb18030, latin-1, cp1252, utf-16"


def check_encoding(encoding: str, key: str) -> str:
    """``auto`` or the codec's canonical name; a ConfigError naming ``key`` for an unknown one."""
    if encoding == AUTO:
        return AUTO
    try:
        return codecs.lookup(str(encoding)).name
    except LookupError:
        raise ConfigError(f"{key}={encoding}: unknown text encoding. Use {key}=auto (detect it) or a Python codec "
                          f"name such as {_EXAMPLES}.") from None


def codec_for(encoding: str) -> str:
    """The codec that reads ``encoding``: UTF-8 also accepts (and drops) a byte-order mark."""
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def detect(path: Path, key: str) -> str:
    """The encoding of ``path`` judged from its first :data:`SAMPLE_BYTES` bytes."""
    with path.open("rb") as file:
        sample = file.read(SAMPLE_BYTES)
        complete = not file.read(1)
    found = sniff(sample, complete)
    if found is None:
        raise DataError(f"{path}: cannot tell its text encoding (is it a text file?). If it is text, set "
                        f"{key}=<its encoding> ({_EXAMPLES}, ...).")
    return found


def sniff(sample: bytes, complete: bool = True) -> str | None:
    """The encoding of text whose first bytes are ``sample`` (all of it when ``complete``); None: not text."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=complete)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = from_bytes(sample)
    best = matches.best()
    if best is None:
        return None
    western = next((m for m in matches if m.encoding == "cp1252"), None)
    if western is not None and best.encoding != "cp1252" and western.chaos <= best.chaos + _NEAR_TIE:
        return "cp1252"
    return codecs.lookup(best.encoding).name


def resolve(path: Path, encoding: str, key: str) -> str:
    """The encoding to read ``path`` with (detected for ``auto``, then logged)."""
    encoding = check_encoding(encoding, key)
    if encoding != AUTO:
        return encoding
    found = detect(path, key)
    log.info(f"{path}: text encoding {found} (detected; set {key}=... to override)")
    return found


def decode_error(path: Path, encoding: str, key: str) -> DataError:
    """Where ``path`` stops decoding as ``encoding`` (byte offset, line), and the fix: called after a
    UnicodeDecodeError, it reads the file again in blocks to find the first bad byte."""
    decoder = codecs.getincrementaldecoder(codec_for(encoding))()
    offset, lines, detail = 0, 1, ""
    with path.open("rb") as file:
        while block := file.read(_BLOCK):
            pending = decoder.getstate()[0]
            try:
                decoder.decode(block)
            except UnicodeDecodeError as error:
                start = offset - len(pending) + error.start
                raw = (pending + block)[error.start:error.end]
                lines += (pending + block)[: error.start].count(b"\n") - pending.count(b"\n")
                offset, detail = start, f"byte{'s' if len(raw) > 1 else ''} {raw.hex(' ')} at byte offset {start}, " \
                                        f"line {lines}"
                break
            offset += len(block)
            lines += block.count(b"\n")
    where = detail or "its end (an incomplete character)"
    return DataError(f"{path}: not {encoding} text: {where}. Set {key}=<the file's encoding> ({_EXAMPLES}, ...), "
                     f"or {key}=auto to detect it.")


def require_content(path: Path, key: str) -> None:
    """A DataError for a 0-byte file, which every reader would otherwise misreport (no header, no columns)."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes). Point {key} at a file with records.")
