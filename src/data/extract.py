"""Text from document files (PDF, DOCX, XLSX, HTML, plain text), one file at a time.

Runs in worker processes, so it imports only the standard library at the top; each format's library (the
``documents`` extra) is imported when a file of that format is read. A file that yields no text gets a reason a user
can act on instead of an exception: :func:`extract` never raises for a bad file.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

VERSION = 1  # bump when the extracted text of a format changes: the cache keys include it

#: extension -> (format, the distribution that reads it, its import name)
FORMATS: dict[str, tuple[str, str, str]] = {
    ".pdf": ("pdf", "pypdf", "pypdf"),
    ".docx": ("docx", "python-docx", "docx"),
    ".xlsx": ("xlsx", "openpyxl", "openpyxl"),
    ".xlsm": ("xlsx", "openpyxl", "openpyxl"),
    ".html": ("html", "beautifulsoup4", "bs4"),
    ".htm": ("html", "beautifulsoup4", "bs4"),
    **{ext: ("text", "charset-normalizer", "charset_normalizer") for ext in (".txt", ".text", ".md", ".rst", ".csv",
                                                                           ".tsv")},
}


@dataclass
class Extracted:
    """The text of one file, or why there is none; ``encoding``: the detected one of a plain-text file."""

    text: str | None = None
    reason: str | None = None
    encoding: str | None = None


def library_version(suffix: str) -> str:
    """The version of the library reading ``suffix`` files ("" if missing): part of the cache key, since a newer
    library may extract different text."""
    try:
        return version(FORMATS[suffix][1])
    except PackageNotFoundError:
        return ""


def extract_file(path: str) -> Extracted:
    """The text of the file at ``path`` (a worker process's task)."""
    with open(path, "rb") as file:
        return extract(file.read(), os.path.splitext(path)[1])


def extract(data: bytes, suffix: str) -> Extracted:
    """The text of a file with extension ``suffix`` whose content is ``data``."""
    kind = FORMATS[suffix.lower()][0]
    try:
        result = _EXTRACTORS[kind](data)
    except Exception as exc:  # any library error on a bad file means the same thing: this file cannot be read
        return Extracted(reason=f"corrupt or not a valid {kind.upper()} file ({type(exc).__name__}: {exc})")
    if result.text is not None and not result.text.strip():
        return Extracted(reason="no text in the file (empty)", encoding=result.encoding)
    return result


def _pdf(data: bytes) -> Extracted:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted and not reader.decrypt(""):
        return Extracted(reason="encrypted PDF (needs a password): decrypt it first")
    text = "\n\n".join(page.extract_text() or "" for page in reader.pages)
    if not text.strip():
        return Extracted(reason=f"PDF without a text layer ({len(reader.pages)} page(s), image-only or scanned?): "
                                "run OCR on it first")
    return Extracted(text)


def _docx(data: bytes) -> Extracted:
    """Paragraphs and table rows (cells tab-separated) in document order."""
    from docx import Document
    from docx.table import Table

    lines = []
    for block in Document(io.BytesIO(data)).iter_inner_content():
        if isinstance(block, Table):
            lines += ["\t".join(cell.text for cell in row.cells) for row in block.rows]
        else:
            lines.append(block.text)
    return Extracted("\n".join(lines))


def _xlsx(data: bytes) -> Extracted:
    """Every sheet's non-empty cells, tab-separated by row (formulas as their last computed values)."""
    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        rows = ["\t".join(str(v) for v in row if v is not None) for sheet in book.worksheets
                for row in sheet.iter_rows(values_only=True)]
    finally:
        book.close()
    return Extracted("\n".join(row for row in rows if row))


def _html(data: bytes) -> Extracted:
    """The visible text (no scripts or styles); the encoding from the page's own declaration or detected."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    for hidden in soup(["script", "style", "template", "noscript"]):
        hidden.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return Extracted("\n".join(line for line in lines if line), encoding=soup.original_encoding)


def _text(data: bytes) -> Extracted:
    """UTF-8 when the bytes are valid UTF-8, else the encoding charset-normalizer finds most likely (as
    ``data.encoding=auto`` reads CSV files)."""
    from src.data.text_files import codec_for, sniff

    encoding = sniff(data)
    if encoding is None:
        return Extracted(reason="not text in any known encoding (a binary file with a text extension?)")
    return Extracted(data.decode(codec_for(encoding)), encoding=encoding)


_EXTRACTORS = {"pdf": _pdf, "docx": _docx, "xlsx": _xlsx, "html": _html, "text": _text}
