"""Server-side maths: every formula becomes MathML when the site is built.

The browser draws MathML itself, so no page loads a maths renderer (MathJax, KaTeX) and
the site needs no network at build or view time. Two sources of formulas:

- Markdown pages and docstrings: ``pymdownx.arithmatex`` (``generic: true``) marks the
  maths as ``<span class="arithmatex">\\(...\\)</span>`` and
  ``<div class="arithmatex">\\[...\\]</div>``.
- The tutorial notebook (mkdocs-jupyter, through nbconvert): its markdown cells keep
  ``$...$`` and ``$$...$$`` as text, for MathJax; nbconvert's MathJax loader, whose
  address is empty here, is removed.

``latex2mathml`` converts the LaTeX. It has no ``aligned`` environment; ``align*``
aligns the same way (right, left, right, ...), so ``aligned`` is read as ``align*``.
Wired in mkdocs.yml (``hooks:``); docs/stylesheets/maths.css aligns the columns.
"""

from __future__ import annotations

import html
import re

from latex2mathml.converter import convert

ARITHMATEX = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.DOTALL)
DELIMITERS = {"\\(": ("\\)", "inline"), "\\[": ("\\]", "block"), "$$": ("$$", "block")}
# nbconvert's MathJax 2 loader and configuration, between its own comments.
MATHJAX = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.DOTALL)
MARKDOWN_CELL = re.compile(
    r'(<div class="[^"]*\bjp-RenderedMarkdown\b[^"]*"[^>]*>)(.*?)(</div>)', re.DOTALL
)
CODE = re.compile(r"(<(code|pre)\b.*?</\2>)", re.DOTALL)  # no maths inside code
DISPLAY_DOLLARS = re.compile(r"\$\$(.+?)\$\$", re.DOTALL)
INLINE_DOLLARS = re.compile(r"(?<![\\$])\$(?!\s)([^$]+?)(?<![\s\\])\$(?!\d)")


def to_mathml(tex: str, display: str) -> str:
    """MathML for ``tex`` (plain LaTeX, HTML entities already decoded)."""
    tex = re.sub(r"\\(begin|end)\{aligned\}", r"\\\1{align*}", tex.strip())
    return convert(tex, display=display)


def _arithmatex(match: re.Match) -> str:
    tag, body = match.groups()
    tex = html.unescape(body).strip()
    for opening, (closing, display) in DELIMITERS.items():
        if tex.startswith(opening) and tex.endswith(closing):
            return to_mathml(tex[len(opening) : -len(closing)], display)
    # an environment (\begin{align}...) stands alone, displayed
    return to_mathml(tex, "inline" if tag == "span" else "block")


def _dollars(text: str) -> str:
    """Convert the ``$$...$$`` and ``$...$`` in an HTML fragment with no code in it."""
    text = DISPLAY_DOLLARS.sub(lambda m: to_mathml(html.unescape(m.group(1)), "block"), text)
    return INLINE_DOLLARS.sub(lambda m: to_mathml(html.unescape(m.group(1)), "inline"), text)


def _markdown_cell(match: re.Match) -> str:
    opening, body, closing = match.groups()
    parts = CODE.split(body)
    # CODE has two groups: split gives text, code, tag name, text, code, tag name, ...
    out = [_dollars(part) if i % 3 == 0 else part for i, part in enumerate(parts) if i % 3 != 2]
    return opening + "".join(out) + closing


def render_maths(content: str) -> str:
    """A page's HTML with its LaTeX replaced by MathML."""
    content = ARITHMATEX.sub(_arithmatex, content)
    if "jp-RenderedMarkdown" in content:
        content = MATHJAX.sub("", content)
        content = MARKDOWN_CELL.sub(_markdown_cell, content)
    return content


def on_page_content(content: str, page, config, files) -> str:  # noqa: ARG001
    """MkDocs hook: runs on every page's HTML, the notebook's included."""
    return render_maths(content)
