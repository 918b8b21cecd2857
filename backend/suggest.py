"""What a person typed, resolved to a boundary or processor name, or a message saying what they may
have meant (the CLI's "did you mean")."""
from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass

from backend.schemas import BoundarySummary, Processor

# Natural Earth abbreviates long names ("S. Sudan", "Dem. Rep. Congo", "Bosnia and Herz."); joining
# words are left out when comparing ("Democratic Republic of the Congo" = "Dem. Rep. Congo").
JOINING_WORDS = {"of", "the", "and", "&"}
MAX_SUGGESTIONS = 5


class NoMatch(ValueError):
    """Nothing (or more than one thing) matches; the message says what might have been meant."""


def fold(text: str) -> str:
    """Lower case without accents."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold().strip()


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[\w]+\.?", fold(text)) if w.rstrip(".") not in JOINING_WORDS]


def _same_words(typed: str, long_name: str) -> bool:
    """Word by word equal, where a word ending in "." abbreviates any word it starts."""
    typed_words, name_words = _words(typed), _words(long_name)
    return len(typed_words) == len(name_words) and all(
        t.rstrip(".") == n or (n.endswith(".") and t.startswith(n[:-1])) for t, n in zip(typed_words, name_words))


@dataclass
class BoundaryNames:
    """Every boundary's name and long name, to resolve what was typed."""

    boundaries: list[BoundarySummary]

    def resolve(self, typed: str) -> str:
        """The boundary name for a name or long name in any case (abbreviations allowed) when
        exactly one boundary fits; `NoMatch` otherwise."""
        if any(b.name == typed for b in self.boundaries):
            return typed
        key = fold(typed)
        fits = [b for b in self.boundaries if fold(b.name) == key or fold(b.name_long) == key]
        fits = fits or [b for b in self.boundaries if _same_words(typed, b.name_long)]
        if len(fits) == 1:
            return fits[0].name
        if fits:
            raise NoMatch(f"{typed!r} fits several boundaries: {self._listing(fits)}; give one of these names")
        raise NoMatch(f"unknown boundary {typed!r}" + self._did_you_mean(typed))

    def _did_you_mean(self, typed: str) -> str:
        key = fold(typed)
        by_text = {fold(b.name): b for b in self.boundaries} | {fold(b.name_long): b for b in self.boundaries}
        close = [by_text[t] for t in difflib.get_close_matches(key, list(by_text), n=MAX_SUGGESTIONS, cutoff=0.75)]
        containing = [b for b in self.boundaries if key in fold(b.name_long) or key in fold(b.name)]
        ranked = list({b.name: b for b in close + sorted(containing, key=lambda b: len(b.name))}.values())
        if not ranked:
            return f"; no boundary name is like it (search with: autopkg boundaries search {typed!r})"
        return f"; did you mean: {self._listing(ranked[:MAX_SUGGESTIONS])}?"

    @staticmethod
    def _listing(boundaries: list[BoundarySummary]) -> str:
        return ", ".join(f"{b.name} ({b.name_long})" for b in boundaries)


@dataclass
class ProcessorNames:
    """Every processor version, to resolve what was typed."""

    processors: list[Processor]

    def resolve(self, typed: str) -> str:
        """The "dataset.version" name for a full name in any case, or for a dataset name with a
        single version; `NoMatch` naming the valid versions or close names otherwise."""
        versions = {v.name.casefold(): v.name for p in self.processors for v in p.versions}
        if typed.casefold() in versions:
            return versions[typed.casefold()]
        dataset, _, version = typed.partition(".")
        found = next((p for p in self.processors if p.name.casefold() == dataset.casefold()), None)
        if found is not None:
            names = [v.name for v in found.versions]
            if not version and len(names) == 1:
                return names[0]
            what = f"unknown version {version!r} of {found.name}" if version else f"{found.name} has several versions"
            raise NoMatch(f"{what}; valid: {', '.join(names)}")
        close = difflib.get_close_matches(typed.casefold(), list(versions) + [p.name for p in self.processors],
                                          n=MAX_SUGGESTIONS, cutoff=0.6)
        hint = f"; did you mean: {', '.join(versions.get(c, c) for c in close)}?" if close else " (autopkg processors lists them)"
        raise NoMatch(f"unknown processor {typed!r}{hint}")
