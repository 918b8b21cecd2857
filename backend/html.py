"""Human-readable pages of a package, generated from processor metadata (all text escaped)."""
from __future__ import annotations

import math
import re
from html import escape
from typing import Any, Iterable

from processors.base import Processor

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;line-height:1.4}}
td,th{{text-align:left;padding:.2em .6em;vertical-align:top}}code{{word-break:break-all}}
.synthetic{{background:#fff3cd;border:2px solid #d9534f;padding:.6em 1em;font-weight:bold}}</style>
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


#: A URL (or www. address), or a DOI written as `doi:10.x/y`, `DOI 10.x/y` or bare `10.x/y` (trailing punctuation excluded).
_REFERENCE = re.compile(r"(?:https?://|www\.)[^\s<>\"]+[^\s<>\".,;:)\]]|(?:\bdoi:?\s?)?\b10\.\d{4,9}/[^\s<>\"]+[^\s<>\".,;:)\]]", re.I)


def _linked(text: str) -> str:
    """`text` escaped, with its URLs and DOIs as links (DOIs to https://doi.org/...)."""
    out, last = [], 0
    for match in _REFERENCE.finditer(text or ""):
        out.append(escape(text[last:match.start()]))
        found = match.group(0)
        if found.lower().startswith("http"):
            url = found
        elif found.lower().startswith("www."):
            url = "https://" + found
        else:
            url = "https://doi.org/" + re.sub(r"^doi:?\s?", "", found, flags=re.I)
        out.append(f'<a href="{escape(url, quote=True)}">{escape(found)}</a>')
        last = match.end()
    out.append(escape((text or "")[last:]))
    return "".join(out)


_SIZE_UNITS = ("B", "KB", "MB", "GB", "TB")


def _size(n: float) -> str:
    """Decimal units, the convention the QGIS plugin uses too: 1234567 -> '1.2 MB'
    (1 KB = 1,000 bytes, 1 MB = 1,000,000 bytes); one decimal below 10, none above."""
    power = min(len(_SIZE_UNITS) - 1, int(math.log10(n) // 3)) if n >= 1000 else 0
    value = n / 1000**power
    if power == 0:
        return f"{int(value)} B"
    return f"{value:.1f} {_SIZE_UNITS[power]}" if value < 10 else f"{value:.0f} {_SIZE_UNITS[power]}"


SYNTHETIC_BANNER = (
    '<p class="synthetic">SYNTHETIC DATA: {what} made from generated stand-ins of the real sources '
    "(the offline sample mirror). Names, layout, CRS and data types are real; the values are not. "
    "Do not use for analysis.</p>"
)


def _banner(resources: Iterable[dict[str, Any]], what: str) -> str:
    return SYNTHETIC_BANNER.format(what=what) if any(r.get("synthetic") for r in resources) else ""


def _sources(resource: dict[str, Any]) -> str:
    return ", ".join(_link(s.get("path", ""), s.get("title") or s.get("path", "")) for s in resource.get("sources", []))


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
            f' ({escape(r["version"])}, {len(r["path"])} file(s), {_size(r["bytes"])})'
            f'{" &mdash; <strong>SYNTHETIC</strong>" if r.get("synthetic") else ""} &mdash; '
            f'licence: {_link(r["license"]["path"], r["license"]["title"] or r["license"]["name"])}</li>'
        )
    body = (
        f"<h1>{escape(title)}</h1>" + _banner(resources, "some datasets of this package are")
        + f"<p>Boundary <code>{escape(boundary['name'])}</code>. Machine-readable description: "
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
        f"<td>{_sources(r)}</td>"
        f"<td>{_linked(r.get('citation', ''))}</td></tr>"
        for r in resources
    )
    body = (
        f"<h1>{escape(title)}</h1>" + _banner(resources, "some datasets of this package are")
        + "<p>Each dataset keeps its own licence; cite it as given.</p>"
        f"<table><tr><th>Dataset</th><th>Licence</th><th>Source</th><th>Citation</th></tr>{rows}</table>"
    )
    return _page(title, body)


def package_version_html(boundary: dict[str, Any], resources: list[dict[str, Any]], tool_version: str) -> str:
    title = f"Versions: {_boundary_title(boundary)}"
    rows = "".join(
        f"<tr><td>{escape(r.get('processor') or r['name'])}</td><td>{escape(r['version'])}</td></tr>" for r in resources
    )
    body = (
        f"<h1>{escape(title)}</h1>" + _banner(resources, "some datasets of this package are")
        + f"<p>Produced by CCG AutoPackaging {escape(tool_version)}.</p>"
        f"<table><tr><th>Processor</th><th>Version</th></tr>{rows}</table>"
    )
    return _page(title, body)


def dataset_index_html(processor: type[Processor], resource: dict[str, Any]) -> str:
    meta = processor.metadata
    title = meta.title_long or meta.title or processor.full_name()
    details = resource.get("files") or [{} for _ in resource["path"]]
    files = "".join(
        f'<li><a href="data/{escape(p.rsplit("/", 1)[-1], quote=True)}">{escape(d.get("label") or p.rsplit("/", 1)[-1])}</a>'
        f'{" (" + escape(d["crs"]) + ")" if d.get("crs") else ""}{" &mdash; empty: no data within the boundary" if d.get("empty") else ""}'
        f" <code>sha256:{escape(h)}</code></li>"
        for p, h, d in zip(resource["path"], resource["hashes"], details)
    )
    body = f"<h1>{escape(title)}</h1>" + _banner([resource], "these files are") + _rows(
        [
            ("Processor", escape(processor.full_name())),
            ("Description", escape(resource.get("description") or meta.description)),
            ("Summary", _linked(meta.summary)),
            ("Author", escape(meta.author)),
            ("Citation", _linked(meta.citation)),
            ("Origin", _link(meta.origin_url)),
            ("Licence", _link(meta.license.path, meta.license.title or meta.license.name)),
            ("Formats", escape(", ".join(meta.formats))),
            ("Size", f"{len(resource['path'])} file(s), {_size(resource['bytes'])}"),
        ]
    ) + f'<h2>Files</h2><ul>{files}</ul><p><a href="license.html">Licence</a></p>'
    return _page(title, body)


def dataset_license_html(processor: type[Processor], resource: dict[str, Any]) -> str:
    meta = processor.metadata
    title = f"Licence: {meta.title or processor.full_name()}"
    body = f"<h1>{escape(title)}</h1>" + _banner([resource], "these files are") + _rows(
        [
            ("Licence", _link(meta.license.path, meta.license.title or meta.license.name)),
            ("Identifier", escape(meta.license.name)),
            ("Cite as", _linked(meta.citation or meta.author)),
            ("Source", _link(meta.origin_url)),
        ]
    )
    return _page(title, body)
