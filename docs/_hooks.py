"""mkdocs hook: the figure gallery is generated from `linnet.figures` (every registered figure, with the first
paragraph of its data function's docstring), so it cannot fall behind the figures `linnet reproduce` makes."""

import re


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "gallery.md":
        return markdown
    from linnet import figures

    parts = []
    for name in figures.FIGURES:
        doc = re.sub(r"\s+", " ", (figures.DATA[name].__doc__ or "").strip().split("\n\n")[0])
        parts.append(f"## {name}\n\n{doc}\n\n![{name}](figures/{name}.png)\n")
    return markdown.replace("<!-- gallery -->", "\n".join(parts))
