"""griffe extension for the docs site's API reference (tools/build_site.py loads it).

minires' docstrings are written for ``help()``: plain text, with the arguments as aligned
"name: what it is" (or "name    what it is") lines. Markdown would run those lines together
into one paragraph, so each such block becomes a list (``- **name**: what it is``), the
lines that follow an item up to the next item or a blank line joined to it. Everything
else -- prose, indented code examples -- is left as written.

A line is taken as a field when it starts with a name (or names: ``a, b``) and a colon,
and then either two spaces or more follow the colon, or the next line is indented (a
continuation), or its paragraph has another such line; without the colon (a name, two
spaces or more, the text) only in a paragraph of two such lines or more.
"""
from __future__ import annotations

import re

import griffe

_FIELD = re.compile(r"^(?P<term>\*{0,2}[A-Za-z_][\w.]*(?:, ?\*{0,2}[A-Za-z_][\w.]*)*)"
                    r"(?:(?P<colon>:)(?P<gap>\s+)| {2,})(?P<desc>\S.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def fields_to_lists(text: str) -> str:
    lines = text.split("\n")
    n = len(lines)
    candidate = [bool(_FIELD.match(line)) for line in lines]

    def continued(i):
        return i + 1 < n and lines[i + 1].strip() and _indent(lines[i + 1]) > 0

    # paragraphs (runs of non-blank lines) and how many candidate lines each holds
    para, k = [], 0
    for line in lines:
        k += not line.strip()
        para.append(k)
    per_para = {}
    for i in range(n):
        per_para[para[i]] = per_para.get(para[i], 0) + candidate[i]

    def is_field(i):
        if not candidate[i]:
            return False
        if per_para[para[i]] >= 2:     # a column of names
            return True
        m = _FIELD.match(lines[i])
        return bool(m.group("colon")) and (len(m.group("gap")) >= 2 or continued(i))

    out, i, in_list = [], 0, False
    while i < n:
        if is_field(i):
            m = _FIELD.match(lines[i])
            desc = [m.group("desc").strip()]
            j = i + 1
            while j < n and lines[j].strip() and not is_field(j):
                desc.append(lines[j].strip())
                j += 1
            if not in_list and out and out[-1].strip():
                out.append("")
            out.append(f"- **{m.group('term')}**: " + " ".join(desc))
            in_list, i = True, j
            continue
        if in_list and lines[i].strip():
            out.append("")
        in_list = False
        out.append(lines[i])
        i += 1
    return "\n".join(out)


class FieldLists(griffe.Extension):
    """Rewrites each docstring's "name: ..." blocks as Markdown lists (see the module)."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = fields_to_lists(obj.docstring.value)
