"""data=documents: text from real PDF/DOCX/XLSX/HTML/text files the tests write, labels from folders and manifests,
every unreadable case reported with its path, the content-hash cache, and a tiny training run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from src.data.extract import extract_file
from src.data.sources.documents import DocumentSource
from src.errors import DataError
from src.train import train
from tests.helpers import QUIET, compose_train

CHINESE = "合同编号：二〇二四年第三号。本合同由甲方与乙方共同签订，双方同意以下条款：付款期限为三十天。"
FRENCH = ("Le café était fermé, donc nous sommes allés à la crêperie près de la gare. Très agréable, même en hiver "
          "à Noël.")


def pdf(path: Path, text: str | None) -> Path:
    """A real PDF with ``text`` on its page, or (None) one page holding only an image, as a scan would."""
    from fpdf import FPDF
    from PIL import Image

    document = FPDF()
    document.add_page()
    if text is None:
        document.image(Image.new("RGB", (40, 20), "gray"), x=10, y=10, w=40)
    else:
        document.set_font("helvetica", size=12)
        document.multi_cell(0, 10, text)
    path.parent.mkdir(parents=True, exist_ok=True)
    document.output(str(path))
    return path


def docx(path: Path, paragraph: str, cells: list[str]) -> Path:
    from docx import Document

    document = Document()
    document.add_paragraph(paragraph)
    table = document.add_table(rows=1, cols=len(cells))
    for cell, value in zip(table.rows[0].cells, cells):
        cell.text = value
    path.parent.mkdir(parents=True, exist_ok=True)
    document.save(str(path))
    return path


def xlsx(path: Path, rows: list[list[object]]) -> Path:
    from openpyxl import Workbook

    book = Workbook()
    for row in rows:
        book.active.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(str(path))
    return path


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def readable_tree(root: Path) -> Path:
    """Two label folders of readable files of every format, nested folders included."""
    pdf(root / "invoice" / "a.pdf", "Invoice number 42\nTotal due: 100 EUR")
    docx(root / "invoice" / "2024" / "b.docx", "Invoice for March", ["item", "price"])
    xlsx(root / "invoice" / "c.xlsx", [["item", "price"], ["chair", 25]])
    write(root / "contract" / "d.html", "<html><head><style>p{}</style><script>var x=1;</script></head>"
                                        "<body><h1>Contract</h1><p>Signed by both parties.</p></body></html>")
    write(root / "contract" / "e.txt", CHINESE.encode("gb18030"))
    write(root / "contract" / "f.md", FRENCH.encode("latin-1"))
    return root


def test_every_format_extracts_its_text(tmp_path):
    root = readable_tree(tmp_path / "docs")
    texts = {Path(p).name: extract_file(str(p)) for p in root.rglob("*.*")}
    assert texts["a.pdf"].text == "Invoice number 42\nTotal due: 100 EUR"
    assert texts["b.docx"].text == "Invoice for March\nitem\tprice"
    assert texts["c.xlsx"].text == "item\tprice\nchair\t25"
    assert texts["d.html"].text == "Contract\nSigned by both parties."  # no script or style text
    assert (texts["e.txt"].text, texts["e.txt"].encoding) == (CHINESE, "gb18030")
    assert texts["f.md"].text == FRENCH  # Latin-1 bytes, read as Windows-1252 (its superset)
    assert extract_file(str(write(tmp_path / "u.txt", "naïve ✓"))).encoding == "utf-8"


def test_folders_are_labels_and_the_cache_serves_a_second_load(tmp_path, caplog):
    root = readable_tree(tmp_path / "docs")
    cache = tmp_path / "cache"
    source = DocumentSource(str(root), cache_dir=str(cache), workers=2)
    data = source.load()
    assert (data.task, data.label_names) == ("multiclass", ["contract", "invoice"])
    train = data.splits["train"]
    by_file = {Path(o).name: (text, labels) for o, text, labels in zip(train.origin, train.texts, train.labels)}
    assert by_file["a.pdf"] == ("Invoice number 42\nTotal due: 100 EUR", [1])
    assert by_file["e.txt"] == (CHINESE, [0])
    assert len(by_file) == 6 and source.stats == {"cached": 0, "extracted": 6}
    entries = sorted(cache.rglob("*.json"))
    written = [entry.stat().st_mtime_ns for entry in entries]

    again = DocumentSource(str(root), cache_dir=str(cache), workers=2)
    with caplog.at_level("DEBUG", logger="src.data.sources.documents"):
        assert again.load().splits["train"].texts == train.texts
    assert again.stats == {"cached": 6, "extracted": 0}
    assert [entry.stat().st_mtime_ns for entry in entries] == written  # read, not rewritten
    assert any("e.txt: encoding gb18030" in message for message in caplog.messages)

    (root / "contract" / "e.txt").write_bytes("另一份合同的内容，付款期限为六十天。".encode("gb18030"))  # new bytes
    changed = DocumentSource(str(root), cache_dir=str(cache), workers=1)
    changed.load()
    assert changed.stats == {"cached": 5, "extracted": 1}


def test_manifest_is_multilabel_with_paths_relative_to_it(tmp_path):
    pdf(tmp_path / "files" / "a.pdf", "Invoice and contract in one")
    write(tmp_path / "files" / "b.txt", "A plain contract")
    manifest = write(tmp_path / "meta" / "train.csv", "path,labels\n../files/a.pdf,\"invoice,contract\"\n"
                                                       "../files/b.txt,contract\n")
    val = write(tmp_path / "meta" / "val.jsonl", json.dumps({"file": "../files/b.txt", "tags": ["invoice"]}) + "\n")
    data = DocumentSource(str(manifest), cache_dir=None, workers=1).load()
    assert (data.task, data.label_names) == ("multilabel", ["contract", "invoice"])
    assert data.splits["train"].texts == ["Invoice and contract in one", "A plain contract"]
    assert data.splits["train"].labels == [[0, 1], [0]]
    with pytest.raises(DataError, match="'path'"):  # the val manifest names its columns differently
        DocumentSource(str(manifest), str(val), workers=1).load()
    gone = write(tmp_path / "meta" / "test.csv", "path,labels\n../files/gone.pdf,invoice\n")
    with pytest.raises(DataError, match=r"gone.pdf: cannot open the file \(No such file"):
        DocumentSource(str(manifest), test=str(gone), workers=1).load()


def unreadable_tree(root: Path) -> dict[str, str]:
    """One file of each unreadable kind beside readable ones; name -> a word its reason must contain."""
    from pypdf import PdfWriter

    readable_tree(root)
    writer = PdfWriter(clone_from=pdf(root / "invoice" / "plain.pdf", "secret terms"))
    writer.encrypt("secret", algorithm="AES-256")
    writer.write(root / "invoice" / "locked.pdf")
    (root / "invoice" / "plain.pdf").unlink()
    pdf(root / "invoice" / "scan.pdf", None)
    write(root / "contract" / "broken.docx", b"PK\x03\x04 not really a zip")
    write(root / "contract" / "slides.pptx", b"whatever")
    write(root / "contract" / "blank.txt", "  \n")
    return {"locked.pdf": "encrypted", "scan.pdf": "OCR", "broken.docx": "corrupt", "slides.pptx": "unsupported",
            "blank.txt": "empty"}


def test_unreadable_files_stop_the_run_with_one_message(tmp_path):
    expected = unreadable_tree(tmp_path / "docs")
    report = tmp_path / "run" / "unreadable.csv"
    with pytest.raises(DataError) as info:
        DocumentSource(str(tmp_path / "docs"), workers=2, report=str(report)).load()
    message = str(info.value)
    assert message.startswith("5 of 11 document file(s) have no readable text")
    assert "data.source.on_unreadable=skip_and_report" in message and str(report) in message
    with report.open(newline="") as lines:
        rows = list(csv.DictReader(lines))
    assert {Path(row["path"]).name for row in rows} == set(expected)
    for row in rows:
        assert expected[Path(row["path"]).name] in row["reason"], row
        assert row["split"] == "train" and Path(row["path"]).is_file()


def test_skip_and_report_trains_on_the_rest(tmp_path, caplog):
    expected = unreadable_tree(tmp_path / "docs")
    report = tmp_path / "unreadable.csv"
    source = DocumentSource(str(tmp_path / "docs"), workers=1, on_unreadable="skip_and_report", report=str(report))
    with caplog.at_level("WARNING"):
        data = source.load()
    assert len(data.splits["train"]) == 6
    assert data.facts["warnings"] == [f"left out 5 unreadable document file(s) (all listed in {report})"]
    assert all(name not in " ".join(data.splits["train"].origin) for name in expected)
    for name in expected:  # each one named in the log and the report
        assert any(name in message for message in caplog.messages), name
        assert name in report.read_text()


def test_layout_mistakes_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="data.source.train: no such directory or file"):
        DocumentSource(str(tmp_path / "typo")).load()
    write(tmp_path / "flat" / "a.txt", "no label folder")
    with pytest.raises(DataError, match="no label folder"):
        DocumentSource(str(tmp_path / "flat")).load()
    readable_tree(tmp_path / "train")
    write(tmp_path / "train" / "invoice" / ".DS_Store", b"\x00\x01")  # hidden: left out, counted in the log
    assert len(DocumentSource(str(tmp_path / "train"), workers=1).load().splits["train"]) == 6
    write(tmp_path / "val" / "memo" / "x.txt", "a label train never had")
    with pytest.raises(DataError, match=r"label folders \['memo'\]"):
        DocumentSource(str(tmp_path / "train"), str(tmp_path / "val"), workers=1).load()


def test_trains_end_to_end_on_a_folder_of_documents(tmp_path, tiny_bert):
    root = tmp_path / "docs"
    for i in range(8):  # enough per label for the carved validation split
        write(root / "joy" / f"{i}.txt", f"sunny party great wonderful day {i}")
        pdf(root / "anger" / f"{i}.pdf", f"furious rude unfair yelling day {i}")
    cfg = compose_train(tmp_path, ["data=documents", f"data.source.train={root}", "data.source.workers=2",
                                   f"model.name_or_path={tiny_bert}", "trainer.max_epochs=1", "data.batch_size=8",
                                   "loss=ce", "logger=none", *QUIET])
    summary = train(cfg)
    assert summary["label_names"] == ["anger", "joy"] and summary["task"] == "multiclass"
    assert any((tmp_path / "outputs" / ".cache" / "documents").rglob("*.json"))
