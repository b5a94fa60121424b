"""Cut a manifest's block-style ``users:`` list into pieces of whole items, for the loader's fast path.

A big desk is one file whose ``users:`` list is most of it. Parsed whole, its raw data (~11 bytes
per byte of YAML) lives beside the models until the end; parsed a piece at a time it never does.
The loader parses three kinds of text on its own: the *head* (everything up to and including the
``users:`` line), the *tail* (from the first top-level key after the list) and each *piece* (whole
items of the list). Cuts are made only where the whole-file parse has a boundary too, or else
one of the texts fails to parse:

- The ``users:`` line is a top-level key only if the head parses to a mapping whose last key is
  ``users`` with no value (inside a multi-line quoted value or flow collection the head would be
  left unterminated).
- A piece starts at a line holding exactly the items' indentation and ``- ``. Such a line cannot
  continue a block scalar or plain scalar of the item before (those continue only on lines
  indented deeper than the item); inside a quoted value or flow collection spanning lines, the
  piece before it is left unterminated.
- The list ends at the first line with something in its first column (a comment or, for items in
  column 0, another item, does not end it). Inside a multi-line quoted value, the last piece is
  left unterminated again.

A document marker or directive (``---``, ``...``, ``%``) in the first column ends the list too:
in the head, yaml-rs answers a list for several documents and the loader declines. The tail is
cut off only when it starts with a plain key (``policy:``): alone it is a document of its own,
whose first line may hold what the whole file refuses there (a document marker, a tag or anchor
for the tail's mapping, a flow mapping ``{policy: …}``); such a file is parsed whole. Tabs and
carriage returns are refused outright. Refused, the file is parsed whole, as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

PIECE_CHARS = 64 * 1024
"""About how much YAML one piece holds: ~190 users of the README's shape (yaml-rs parses pieces of
16-64K a third faster than pieces of 1M or more, measured on a 100k-user desk)."""

_USERS_LINE = re.compile(r"users:(?:[ ]+#[^\n]*|[ ]*)\n")
_FIRST_ITEM = re.compile(r"(?:[ ]*(?:#[^\n]*)?\n)*( *)- ")
_END_AFTER_INDENTED = re.compile(r"\n(?=[^ #\n])")
"""A line with something in its first column ends a list whose items are indented."""
_END_AFTER_COLUMN_0 = re.compile(r"\n(?=[^ #\n-]|-[^ \n])")
"""…or, for items in column 0, a line that is not another item."""
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*[ ]*:(?:[ ]|$)", re.MULTILINE)
"""How a tail must start: what is a key of the top-level mapping in the whole file too."""


@dataclass(frozen=True)
class UsersBlock:
    """Where a file's block-style users list is: ``text[:start]`` is the head, ``text[end:]`` the tail."""

    start: int
    end: int
    indent: int
    """The column of the items' ``-``."""
    first: int
    """Where the first item's line starts (comment lines may come before it)."""


def users_block(text: str) -> UsersBlock | None:
    """Find the block-style ``users:`` list at the top level of ``text`` (None: none, or not judged here)."""
    if "\t" in text or "\r" in text:
        return None
    at = 0 if text.startswith("users:") else text.find("\nusers:") + 1
    if at == 0 and not text.startswith("users:"):
        return None
    line = _USERS_LINE.match(text, at)
    first = _FIRST_ITEM.match(text, line.end()) if line is not None else None
    if line is None or first is None:
        return None
    indent = len(first[1])
    ends = _END_AFTER_COLUMN_0 if indent == 0 else _END_AFTER_INDENTED
    found = ends.search(text, first.end())
    end = len(text) if found is None else found.end()
    if end < len(text) and not _PLAIN_KEY.match(text, end):
        return None  # the tail alone could read otherwise (a new document, a root tag or anchor)
    return UsersBlock(line.end(), end, indent, first.end() - indent - 2)


def pieces(text: str, block: UsersBlock) -> Iterator[str]:
    """Yield the users list in pieces of whole items, each about :data:`PIECE_CHARS` or one item."""
    item = "\n" + " " * block.indent + "- "
    size = PIECE_CHARS
    start = block.start
    while start < block.end:
        # Each piece holds at least one item: the first one, behind any comment lines, too.
        cut = text.find(item, min(max(start + size, block.first), block.end), block.end)
        end = block.end if cut == -1 else cut + 1
        yield text[start:end]
        start = end
