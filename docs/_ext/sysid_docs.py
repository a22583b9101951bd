"""Sphinx directives of the sysid_msstcn documentation.

``.. preset-table::``
    The preset table, computed at build time by
    :func:`sysid_msstcn.summary.preset_summary` (parameter counts and receptive
    fields come from the code, never typed by hand).
``.. benchmark-results:: <folder>``
    Every result file in a folder (relative to the documentation source):
    Markdown files (``*.md``) are rendered (headings, paragraphs, lists,
    pipe tables, code blocks), CSV files become tables and JSON files are
    listed with their description, date and hardware. Nothing is shown when
    the folder is missing or empty, so the page builds before results exist.
``.. markdown-include:: <file>``
    One Markdown file rendered the same way (``:optional:`` skips a missing
    file silently).
``.. cli-help::``
    The ``--help`` text of ``sysid-msstcn`` and of every subcommand, from
    :func:`sysid_msstcn.cli.build_parser`.

Markdown is converted straight into docutils nodes (no reStructuredText
parsing), so text in result files cannot produce build warnings. myst-parser
is not needed.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive, directives

_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*|\[([^\]]+)\]\(([^)\s]+)\)")


def _inline(text: str) -> list[nodes.Node]:
    """Inline code, bold and links of one Markdown line, as docutils nodes."""
    out: list[nodes.Node] = []
    pos = 0
    for m in _INLINE.finditer(text):
        if m.start() > pos:
            out.append(nodes.Text(text[pos : m.start()]))
        code, bold, label, url = m.groups()
        if code is not None:
            out.append(nodes.literal(code, code))
        elif bold is not None:
            out.append(nodes.strong(bold, bold))
        elif url.startswith(("http://", "https://")):
            out.append(nodes.reference(label, label, refuri=url))
        else:
            out.append(nodes.Text(label))
        pos = m.end()
    if pos < len(text):
        out.append(nodes.Text(text[pos:]))
    return out


def _paragraph(text: str) -> nodes.paragraph:
    para = nodes.paragraph()
    para += _inline(text)
    return para


def table(header: list[str], rows: list[list[str]], title: str = "") -> nodes.table:
    """A docutils table from strings (Markdown inline markup allowed)."""
    n = max([len(header)] + [len(r) for r in rows])
    tbl = nodes.table(classes=["colwidths-auto"])
    if title:
        tbl += nodes.title(title, title)
    group = nodes.tgroup(cols=n)
    tbl += group
    group += [nodes.colspec(colwidth=1) for _ in range(n)]

    def row(cells: list[str]) -> nodes.row:
        r = nodes.row()
        for i in range(n):
            entry = nodes.entry()
            entry += _paragraph(cells[i] if i < len(cells) else "")
            r += entry
        return r

    head = nodes.thead()
    head += row(header)
    body = nodes.tbody()
    body += [row(r) for r in rows]
    group += [head, body]
    return tbl


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_nodes(text: str) -> list[nodes.Node]:
    """Render a small Markdown subset into docutils nodes."""
    out: list[nodes.Node] = []
    lines = text.splitlines()
    i, para = 0, []

    def flush() -> None:
        if para:
            out.append(_paragraph(" ".join(para)))
            para.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            code = "\n".join(lines[i + 1 : j])
            out.append(nodes.literal_block(code, code))
            i = j + 1
            continue
        if stripped.startswith("#"):
            flush()
            title = stripped.lstrip("#").strip()
            rubric = nodes.rubric()
            rubric += _inline(title)
            out.append(rubric)
        elif (
            stripped.startswith("|")
            and i + 1 < len(lines)
            and set(lines[i + 1].strip()) <= set("|-: ")
        ):
            flush()
            header, rows = _cells(line), []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            out.append(table(header, rows))
            continue
        elif re.match(r"^\s*([-*]|\d+\.)\s+", line):
            flush()
            items = nodes.bullet_list()
            while i < len(lines) and re.match(r"^\s*([-*]|\d+\.)\s+", lines[i]):
                item = re.sub(r"^\s*([-*]|\d+\.)\s+", "", lines[i])
                i += 1
                while i < len(lines) and lines[i].startswith("  ") and lines[i].strip():
                    item += " " + lines[i].strip()
                    i += 1
                li = nodes.list_item()
                li += _paragraph(item)
                items += li
            out.append(items)
            continue
        elif not stripped:
            flush()
        elif not stripped.startswith("<!--"):
            para.append(stripped)
        i += 1
    flush()
    return out


def _csv_table(path: Path) -> nodes.table:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    return table(rows[0] if rows else [], rows[1:], title=path.name)


def _json_summary(path: Path) -> list[nodes.Node]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return [_paragraph(f"{path.name}: not readable ({exc})")]
    if not isinstance(doc, dict):
        return [_paragraph(f"`{path.name}`")]
    hw = doc.get("hardware") or doc.get("meta", {}).get("hardware") or {}
    facts = []
    for key in ("cpu_model", "cpu", "gpu", "device", "torch_version", "torch"):
        if key in hw:
            facts.append(f"{key}: {hw[key]}")
    rows = [
        ["file", f"`{path.name}`"],
        ["what", str(doc.get("description") or doc.get("benchmark") or "")],
        ["date", str(doc.get("date", ""))],
        ["hardware", "; ".join(facts)],
    ]
    return [table(["", path.stem], [r for r in rows if r[1]])]


class BenchmarkResults(Directive):
    """Render every result file of a folder (see the module docstring)."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        folder = (Path(env.srcdir) / self.arguments[0]).resolve()
        out: list[nodes.Node] = []
        if not folder.is_dir():
            return out
        for path in sorted(folder.iterdir()):
            env.note_dependency(str(path))
            if path.suffix == ".md":
                out += markdown_nodes(path.read_text())
            elif path.suffix == ".csv":
                out.append(_csv_table(path))
        jsons = sorted(folder.glob("*.json"))
        if jsons:
            out.append(nodes.rubric("", "", nodes.Text("Result files (JSON)")))
            for path in jsons:
                out += _json_summary(path)
        return out


class MarkdownInclude(Directive):
    """Render one Markdown file."""

    required_arguments = 1
    option_spec = {"optional": directives.flag}

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        path = (Path(env.srcdir) / self.arguments[0]).resolve()
        if not path.is_file():
            if "optional" in self.options:
                return []
            raise self.error(f"markdown-include: no file {path}")
        env.note_dependency(str(path))
        return markdown_nodes(path.read_text())


class PresetTable(Directive):
    """The preset table computed from the code."""

    def run(self) -> list[nodes.Node]:
        from sysid_msstcn.presets import preset_names
        from sysid_msstcn.summary import preset_summary

        header = [
            "preset",
            "C_y",
            "parameters",
            "receptive field (steps)",
            "total stride",
            "latent dims per step",
            "description",
        ]
        rows = []
        for name in preset_names():
            s = preset_summary(name)
            rows.append(
                [
                    f"`{name}`",
                    str(s["n_outputs"]),
                    f"{s['parameters']:,}",
                    f"{s['receptive_field']:,}",
                    str(s["total_stride"]),
                    f"{s['latent_per_step']:.3g}",
                    s["description"],
                ]
            )
        return [table(header, rows)]


class CliHelp(Directive):
    """``--help`` of the command line and its subcommands."""

    def run(self) -> list[nodes.Node]:
        import argparse

        from sysid_msstcn.cli import build_parser

        parser = build_parser()
        out: list[nodes.Node] = []
        blocks = [("sysid-msstcn --help", parser.format_help())]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    blocks.append((f"sysid-msstcn {name} --help", sub.format_help()))
        for title, text in blocks:
            out.append(nodes.rubric(title, title))
            out.append(nodes.literal_block(text, text))
        return out


def setup(app):  # noqa: D103
    app.add_directive("benchmark-results", BenchmarkResults)
    app.add_directive("markdown-include", MarkdownInclude)
    app.add_directive("preset-table", PresetTable)
    app.add_directive("cli-help", CliHelp)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
