"""PDFs in and out for `wmtp clara eval-pdf`: a renderer that turns paragraphs into a real
multi-page PDF (so the embedded demo and the tests exercise the same path as a user's file),
text extraction with pypdf, and a chunker that undoes the PDF layout (wrapped lines, hyphenated
words, headings on their own line) before packing whole sentences into retrieval chunks.

The renderer sets monospaced text wrapped at a fixed number of characters. That keeps every line
inside the page without measuring glyphs, and it is also what lets the chunker tell a wrapped
line from a deliberate line break exactly: a greedy wrap breaks a line only when the next word
would not fit (see `_deliberate_break`)."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from weighted_mtp.errors import ConfigError, WMTPError
from weighted_mtp.rag.passages import Passage

# A4 portrait, in inches; 10 pt DejaVu Sans Mono is 0.602 em wide, so 80 characters fill the
# 6.77 in between the margins. Titles wrap narrower (see `_deliberate_break`).
PAGE_SIZE = (8.27, 11.69)
MARGIN_IN = 0.75
FONT_SIZE = 10.0
FONT_FAMILY = "DejaVu Sans Mono"
CHAR_WIDTH_EM = 0.602
LINE_HEIGHT = 1.45  # in font sizes
TITLE_WRAP = 0.6    # titles wrap at this share of the text width


def line_width_chars() -> int:
    """How many monospaced characters fit between the margins."""
    usable_pt = (PAGE_SIZE[0] - 2 * MARGIN_IN) * 72
    return int(usable_pt / (CHAR_WIDTH_EM * FONT_SIZE))


def _wrap(text: str, width: int) -> list[str]:
    # Break at spaces only: a break inside "state-of-the-art" would come back from the PDF as
    # "state-of-\nthe-art", which no reader can tell from a hyphenated word.
    return textwrap.wrap(" ".join(text.split()), width, break_long_words=False, break_on_hyphens=False)


def _layout(paragraphs: Sequence[tuple[str, str]], per_page: int | None,
            lines_per_page: float) -> list[list[tuple[str, bool, bool]]]:
    """Pages of (line, is_title, gap_before): at most `per_page` paragraphs start on a page, and
    a paragraph that does not fit continues on the next page (its title is never left alone
    at the bottom). Paragraphs are separated by half a line."""
    width = line_width_chars()
    pages: list[list[tuple[str, bool, bool]]] = [[]]
    used, started = 0.0, 0
    for title, text in paragraphs:
        title_lines = _wrap(title, int(width * TITLE_WRAP))
        body = _wrap(text, width)
        head = 0.5 * bool(pages[-1]) + len(title_lines) + min(1, len(body))
        if pages[-1] and ((per_page is not None and started >= per_page) or used + head > lines_per_page):
            pages.append([])
            used, started = 0.0, 0
        started += 1
        for i, (line, is_title) in enumerate([(t, True) for t in title_lines] + [(b, False) for b in body]):
            gap = i == 0 and bool(pages[-1])
            if pages[-1] and used + 1 + 0.5 * gap > lines_per_page:
                pages.append([])
                used, gap = 0.0, False
            pages[-1].append((line, is_title, gap))
            used += 1 + 0.5 * gap
    return [p for p in pages if p]


def render_pdf(paragraphs: Sequence[tuple[str, str]], path: str | Path, per_page: int | None = None,
               title: str | None = None) -> Path:
    """Write (title, text) paragraphs as an A4 PDF: a bold title line, then the text wrapped to
    the page. `per_page` caps the paragraphs that start on one page (None: fill each page).
    The file is byte-for-byte the same for the same input (no creation date)."""
    # Figures made without pyplot: no global backend switch, nothing left open in a notebook.
    import matplotlib
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    if per_page is not None and (isinstance(per_page, bool) or not isinstance(per_page, int) or per_page < 1):
        raise ConfigError(f"per_page must be an integer >= 1 or None, got {per_page!r}")
    if not paragraphs:
        raise WMTPError(f"{path}: no paragraphs to render")
    for i, item in enumerate(paragraphs):
        if not (isinstance(item, tuple) and len(item) == 2 and all(isinstance(s, str) for s in item)):
            raise WMTPError(f"{path}: paragraph {i} must be a (title, text) pair of strings, got {item!r}")
    line_pt = FONT_SIZE * LINE_HEIGHT
    usable_h = (PAGE_SIZE[1] - 2 * MARGIN_IN) * 72
    pages = _layout(paragraphs, per_page, usable_h / line_pt)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"Title": title or path.stem, "Creator": "weighted-mtp", "CreationDate": None}
    x = MARGIN_IN / PAGE_SIZE[0]
    # Type 42 embeds TrueType glyphs with a Unicode map, which text extractors read reliably.
    with matplotlib.rc_context({"pdf.fonttype": 42}), PdfPages(path, metadata=metadata) as pdf:
        for page in pages:
            fig = Figure(figsize=PAGE_SIZE)
            y_pt = 0.0
            for line, is_title, gap_before in page:
                y_pt += (0.5 * line_pt if gap_before else 0.0)
                y = 1 - (MARGIN_IN * 72 + y_pt) / (PAGE_SIZE[1] * 72)
                # parse_math=False: "$3 and $4" is money, not mathtext.
                fig.text(x, y, line, fontsize=FONT_SIZE, family=FONT_FAMILY, va="top", parse_math=False,
                         weight="bold" if is_title else "normal")
                y_pt += line_pt
            pdf.savefig(fig)
    return path


# ------------------------------------------------------------------------------------ extract

def extract_text(path: str | Path) -> list[str]:
    """The text of every page (one string per page, lines separated by newlines). A file that
    is missing, not a PDF, encrypted or unreadable fails naming it; so does a PDF without a
    single character of text, which is almost always a scan that needs OCR first."""
    import pypdf
    from pypdf.errors import DependencyError, PyPdfError

    # pypdf reports a damaged file with its own errors and, deeper in a broken object tree,
    # with plain ones; any of them means this file cannot be read.
    broken = (PyPdfError, DependencyError, ValueError, KeyError, TypeError, AttributeError, IndexError)

    path = Path(path)
    if not path.is_file():
        raise WMTPError(f"{path}: PDF file not found")
    with open(path, "rb") as fh:
        head = fh.read(1024)
    if b"%PDF-" not in head:
        raise WMTPError(f"{path}: not a PDF (no %PDF- header)")
    try:
        reader = pypdf.PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise WMTPError(f"{path}: the PDF is encrypted with a password; decrypt it first")
        n = len(reader.pages)
    except broken as exc:
        raise WMTPError(f"{path}: unreadable PDF ({type(exc).__name__}: {exc})") from None
    if n == 0:
        raise WMTPError(f"{path}: the PDF has no pages")
    pages = []
    for i, page in enumerate(reader.pages, 1):
        try:
            pages.append(page.extract_text() or "")
        except broken as exc:
            raise WMTPError(f"{path}: page {i}: cannot extract text ({type(exc).__name__}: {exc})") from None
    if not any(p.strip() for p in pages):
        raise WMTPError(f"{path}: no extractable text on any of its {n} pages (scanned? run OCR first)")
    return pages


# -------------------------------------------------------------------------------------- chunk

@dataclass(frozen=True)
class Chunk:
    """Whole sentences of the document, at most `max_words` words unless one sentence is longer.
    `page` (1-based) is where the first sentence starts; `sentences` keeps the boundaries
    the chunker found (a heading is a "sentence" of its own), `text` joins them with spaces."""

    cid: str
    page: int
    text: str
    sentences: tuple[str, ...] = ()

    def to_passage(self, title: str = "") -> Passage:
        return Passage(pid=self.cid, title=title, text=self.text)


_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
                            "\ufb05": "st", "\ufb06": "st", "\u00ad": None})
# Words whose period does not end a sentence when a capital follows ("Dr. Smith", "St. Louis").
_ABBREVIATIONS = frozenset("mr mrs ms dr prof st mt jr sr sen gen rev fig figs no nos vol pp cf vs "
                           "approx ca e.g i.e al".split())
_END = re.compile(r"[.!?]+['\")\]\u2019\u201d]*\s+")
_INITIALS = re.compile(r"(?:[^\W\d_]\.)*[^\W\d_]")  # "J", "U.S", "e.g"
_NUMBERING = re.compile(r"\d+(?:\.\d+)*")  # "1. Introduction", "2.3. Results": a heading's number
_OPENERS = "\"'([\u2018\u201c"


def _clean(line: str) -> str:
    return " ".join(line.translate(_LIGATURES).split())


def _hyphen_at_end(line: str, nxt: str) -> bool:
    return len(line) >= 2 and line.endswith("-") and line[-2].isalnum() and bool(nxt)


def _join(text: str, nxt: str) -> str:
    """`text` with the line `nxt` appended. A word hyphenated at the line end ("informa-" +
    "tion") loses its hyphen; a compound that already has one ("state-of-the-" + "art"), a
    capital ("Jean-" + "Paul") or a number keeps it, without a space. Other lines join with a space."""
    if not _hyphen_at_end(text, nxt):
        return f"{text} {nxt}"
    word = text.split()[-1][:-1]
    if text[-2].isalpha() and nxt[0].islower() and "-" not in word:
        return text[:-1] + nxt
    return text + nxt


def _deliberate_break(line: str, nxt: str, widest: int) -> bool:
    """A line break the author made (after a heading, between paragraphs) rather than the layout:
    the next line's first word would still have fit on this line, and it does not start in
    lower case. Greedy wrapping only breaks where the next word does not fit, so with the
    renderer's monospaced lines this is exact; with proportional fonts a wrong call only splits
    or joins two adjacent sentences."""
    if _hyphen_at_end(line, nxt) or nxt[0].islower():
        return False
    return len(line) + 1 + len(nxt.split()[0]) <= widest


def split_sentences(text: str) -> list[str]:
    """Sentences of one block of running text: a period, ! or ? (and closing quotes/brackets),
    then space, then a capital, digit or opening quote; not after a known abbreviation or a
    single-letter initial ("J. Smith") or a section number ("2.1. Results")."""
    text = _clean(text)
    out, start = [], 0
    for m in _END.finditer(text):
        end = m.end()
        if end >= len(text):
            break
        nxt = text[end]
        if not (nxt.isupper() or nxt.isdigit() or nxt in _OPENERS):
            continue
        words = text[start:m.start()].split()
        word = words[-1].lstrip(_OPENERS).lower() if words else ""
        if text[m.start()] == "." and (word in _ABBREVIATIONS or _INITIALS.fullmatch(word)
                                       or (len(words) == 1 and _NUMBERING.fullmatch(word))):
            continue
        out.append(text[start:end].strip())
        start = end
    if text[start:].strip():
        out.append(text[start:].strip())
    return out


def page_sentences(pages: Sequence[str]) -> list[tuple[int, str]]:
    """(page, sentence) in reading order, the page being where the sentence starts. Lines are
    rejoined across wraps and page ends; blank lines and deliberate breaks end a block."""
    lines: list[tuple[int, str] | None] = []
    for page_no, text in enumerate(pages, 1):
        lines += [(page_no, c) if c else None for c in map(_clean, text.split("\n"))]
    # The text width, as the widest line of the whole document: one page can be all short lines.
    widest = max((len(item[1]) for item in lines if item), default=0)
    blocks: list[tuple[str, list[tuple[int, int]]]] = []  # text, (char offset, page) where each line starts
    text, starts = "", []
    for i, item in enumerate(lines):
        if item is not None:
            page_no, line = item
            joined = _join(text, line) if text else line
            starts.append((len(joined) - len(line), page_no))
            text = joined
            nxt = lines[i + 1] if i + 1 < len(lines) else None
            if nxt is not None and not _deliberate_break(line, nxt[1], widest):
                continue
        if text:
            blocks.append((text, starts))
        text, starts = "", []
    out = []
    for text, starts in blocks:
        offset = 0
        for sentence in split_sentences(text):
            at = text.index(sentence, offset)
            offset = at + len(sentence)
            out.append((max(page for start, page in starts if start <= at), sentence))
    return out


def chunk_text(pages: Sequence[str], max_words: int = 60, overlap_sentences: int = 0) -> list[Chunk]:
    """Pack the document's sentences, in order, into chunks of at most `max_words` words (a
    longer sentence is a chunk of its own; sentences are never cut, since a retriever that
    returns half a fact cannot support an answer). Each chunk after the first repeats the last
    `overlap_sentences` sentences of the one before, as far as they fit."""
    if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1:
        raise ConfigError(f"max_words must be an integer >= 1, got {max_words!r}")
    if isinstance(overlap_sentences, bool) or not isinstance(overlap_sentences, int) or overlap_sentences < 0:
        raise ConfigError(f"overlap_sentences must be an integer >= 0, got {overlap_sentences!r}")
    groups: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] = []

    def words(items: list[tuple[int, str]]) -> int:
        return sum(len(s.split()) for _, s in items)

    for item in page_sentences(pages):
        if current and words(current) + len(item[1].split()) > max_words:
            groups.append(current)
            carry = current[len(current) - overlap_sentences:] if overlap_sentences else []
            while carry and words(carry) + len(item[1].split()) > max_words:
                carry = carry[1:]
            current = list(carry)
        current.append(item)
    if current:
        groups.append(current)
    return [Chunk(cid=f"c{i}", page=g[0][0], text=" ".join(s for _, s in g), sentences=tuple(s for _, s in g))
            for i, g in enumerate(groups)]


def chunks_to_passages(chunks: Sequence[Chunk], title: str = "") -> list[Passage]:
    """The chunks as a retrieval corpus (pid = chunk id)."""
    return [c.to_passage(title) for c in chunks]
