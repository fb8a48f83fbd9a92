"""mkdocs hook for the docs site (tools/build_site.py points mkdocs.yml's ``hooks`` here).

A lesson page's table of contents comes from mkdocs-jupyter, which drops a heading's code
spans before it makes the anchors ("3. Write a new op: `Sin`" -> ``#3-write-a-new-op``)
while the heading itself keeps them (``id="3-write-a-new-op-sin"``): such links go nowhere.
Both list the same headings in the same order, so each entry of the table of contents takes
the id of its heading.
"""
import re

_HEADING_ID = re.compile(r"<h[1-6]\b[^>]*?\bid=\"([^\"]+)\"")


def _flat(items):
    for item in items:
        yield item
        yield from _flat(item.children)


def on_page_content(html, page, config, files):
    if not page.file.src_uri.endswith(".ipynb") or page.toc is None:
        return html
    entries = list(_flat(page.toc.items))
    ids = _HEADING_ID.findall(html)
    if len(entries) == len(ids):
        for entry, heading_id in zip(entries, ids, strict=True):
            entry.id = heading_id
    return html
