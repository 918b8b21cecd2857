"""Human-readable pages of a package, generated from processor metadata (all text escaped)."""
from __future__ import annotations

from html import escape
from typing import Any, Iterable

from processors.base import Processor

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;line-height:1.4}}
td,th{{text-align:left;padding:.2em .6em;vertical-align:top}}code{{word-break:break-all}}</style>
</head><body>
{body}
</body></html>
"""


def _page(title: str, body: str) -> str:
    return _PAGE.format(title=escape(title), body=body)


def _link(url: str, text: str | None = None) -> str:
    if url.startswith(("http://", "https://")):
        return f'<a href="{escape(url, quote=True)}">{escape(text or url)}</a>'
    return escape(text or url)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _boundary_title(boundary: dict[str, Any]) -> str:
    return boundary.get("name_long") or boundary["name"]


def _rows(rows: Iterable[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def package_index_html(boundary: dict[str, Any], resources: list[dict[str, Any]]) -> str:
    title = f"Data package: {_boundary_title(boundary)}"
    items = []
    for r in resources:
        dataset_dir = r["path"][0].rsplit("/data/", 1)[0] if r["path"] else ""
        items.append(
            f'<li><a href="{escape(dataset_dir, quote=True)}/index.html">{escape(r.get("title") or r["name"])}</a>'
            f' ({escape(r["version"])}, {len(r["path"])} file(s), {_size(r["bytes"])}) &mdash; '
            f'licence: {_link(r["license"]["path"], r["license"]["title"] or r["license"]["name"])}</li>'
        )
    body = (
        f"<h1>{escape(title)}</h1>"
        f"<p>Boundary <code>{escape(boundary['name'])}</code>. Machine-readable description: "
        f'<a href="datapackage.json">datapackage.json</a> (Frictionless Data Package); '
        f'history of runs: <a href="provenance.json">provenance.json</a>; '
        f'<a href="license.html">licences</a>; <a href="version.html">versions</a>.</p>'
        f"<h2>Datasets</h2><ul>{''.join(items) or '<li>none yet</li>'}</ul>"
    )
    return _page(title, body)


def package_license_html(boundary: dict[str, Any], resources: list[dict[str, Any]]) -> str:
    title = f"Licences: {_boundary_title(boundary)}"
    rows = "".join(
        f"<tr><td>{escape(r.get('title') or r['name'])}</td>"
        f"<td>{_link(r['license']['path'], r['license']['title'] or r['license']['name'])}</td>"
        f"<td>{escape(r.get('citation', ''))}</td></tr>"
        for r in resources
    )
    body = (
        f"<h1>{escape(title)}</h1><p>Each dataset keeps its own licence; cite it as given.</p>"
        f"<table><tr><th>Dataset</th><th>Licence</th><th>Citation</th></tr>{rows}</table>"
    )
    return _page(title, body)


def package_version_html(boundary: dict[str, Any], resources: list[dict[str, Any]], tool_version: str) -> str:
    title = f"Versions: {_boundary_title(boundary)}"
    rows = "".join(
        f"<tr><td>{escape(r.get('processor') or r['name'])}</td><td>{escape(r['version'])}</td></tr>" for r in resources
    )
    body = (
        f"<h1>{escape(title)}</h1><p>Produced by CCG AutoPackaging {escape(tool_version)}.</p>"
        f"<table><tr><th>Processor</th><th>Version</th></tr>{rows}</table>"
    )
    return _page(title, body)


def dataset_index_html(processor: type[Processor], resource: dict[str, Any]) -> str:
    meta = processor.metadata
    title = meta.title_long or meta.title or processor.full_name()
    files = "".join(
        f'<li><a href="data/{escape(p.rsplit("/", 1)[-1], quote=True)}">{escape(p.rsplit("/", 1)[-1])}</a>'
        f" <code>sha256:{escape(h)}</code></li>"
        for p, h in zip(resource["path"], resource["hashes"])
    )
    body = f"<h1>{escape(title)}</h1>" + _rows(
        [
            ("Processor", escape(processor.full_name())),
            ("Description", escape(meta.description)),
            ("Summary", escape(meta.summary)),
            ("Author", escape(meta.author)),
            ("Citation", escape(meta.citation)),
            ("Origin", _link(meta.origin_url)),
            ("Licence", _link(meta.license.path, meta.license.title or meta.license.name)),
            ("Formats", escape(", ".join(meta.formats))),
        ]
    ) + f'<h2>Files</h2><ul>{files}</ul><p><a href="license.html">Licence</a></p>'
    return _page(title, body)


def dataset_license_html(processor: type[Processor]) -> str:
    meta = processor.metadata
    title = f"Licence: {meta.title or processor.full_name()}"
    body = f"<h1>{escape(title)}</h1>" + _rows(
        [
            ("Licence", _link(meta.license.path, meta.license.title or meta.license.name)),
            ("Identifier", escape(meta.license.name)),
            ("Cite as", escape(meta.citation or meta.author)),
            ("Source", _link(meta.origin_url)),
        ]
    )
    return _page(title, body)
