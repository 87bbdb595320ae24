"""Customer matching (pure): pair platform patients with existing QBO customers by name and e-mail.

Scores are in [0, 1]. Names are normalised (case, accents, punctuation, honorifics and suffixes dropped,
``Last, First`` and ``First Last`` treated alike) and compared with difflib's ratio on the sorted tokens and
on the full string; an exact e-mail match is strong evidence on its own and decisive with a similar name.
stdlib only: difflib is fast enough for a practice's customer list (hundreds to a few thousand) because a
cheap upper bound (``real_quick_ratio``) skips most pairs before the exact ratio is computed.

A suggestion is *ambiguous* when the runner-up scores within ``margin`` of the best one: those are never
accepted automatically, whatever the threshold.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any

HONORIFICS = frozenset({"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "jr", "sr", "ii", "iii", "iv", "md", "phd"})
EMAIL_ONLY_SCORE = 0.9  # same e-mail, different-looking name (a married name, a nickname)
DEFAULT_MIN_SCORE = 0.6
DEFAULT_MARGIN = 0.05


def normalize_name(text: str | None) -> str:
    """``"Dr. José  O'Neil-Smith, Jr."`` → ``"jose oneil smith"`` (lower case, ASCII, tokens in order)."""
    if not text:
        return ""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().casefold()
    plain = plain.replace("'", "").replace("\u2019", "")
    tokens = [t for t in re.split(r"[^a-z0-9]+", plain) if t and t not in HONORIFICS]
    return " ".join(tokens)


def normalize_email(text: str | None) -> str:
    return (text or "").strip().casefold()


def _sorted_tokens(name: str) -> str:
    return " ".join(sorted(name.split()))


@dataclass(frozen=True)
class Person:
    """A platform patient as the matcher sees it."""

    key: str  # the patient id
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None

    @property
    def name(self) -> str:
        return normalize_name(" ".join(p for p in (self.first_name, self.last_name) if p))


@dataclass(frozen=True)
class Customer:
    """A QBO customer as the matcher sees it (Id, names, e-mail)."""

    id: str
    display_name: str
    names: tuple[str, ...]  # normalised name variants (display, given + family, company)
    email: str = ""

    @classmethod
    def from_qbo(cls, row: Mapping[str, Any]) -> Customer:
        given = " ".join(str(row.get(k) or "") for k in ("GivenName", "MiddleName", "FamilyName"))
        variants = [row.get("DisplayName"), given, row.get("FullyQualifiedName"), row.get("CompanyName")]
        names = tuple(dict.fromkeys(n for n in (normalize_name(str(v)) for v in variants if v) if n))
        email = normalize_email((row.get("PrimaryEmailAddr") or {}).get("Address"))
        return cls(id=str(row["Id"]), display_name=str(row.get("DisplayName") or ""), names=names, email=email)


@dataclass(frozen=True)
class Candidate:
    customer_id: str
    display_name: str
    score: float
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Suggestion:
    patient_id: str
    candidates: tuple[Candidate, ...]
    ambiguous: bool
    best: Candidate | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "patient_id": self.patient_id,
            "ambiguous": self.ambiguous,
            "best": _cand(self.best) if self.best else None,
            "candidates": [_cand(c) for c in self.candidates],
        }


def _cand(c: Candidate) -> dict[str, Any]:
    return {"customer_id": c.customer_id, "display_name": c.display_name, "score": c.score, "reasons": list(c.reasons)}


def name_score(a: str, b: str) -> float:
    """Similarity of two normalised names, order-insensitive. 1.0 = same tokens."""
    if not a or not b:
        return 0.0
    sa, sb = _sorted_tokens(a), _sorted_tokens(b)
    if sa == sb:
        return 1.0
    return max(SequenceMatcher(None, sa, sb).ratio(), SequenceMatcher(None, a, b).ratio())


def _best_name_score(person_name: str, customer: Customer, floor: float) -> float:
    best = 0.0
    ps = _sorted_tokens(person_name)
    for name in customer.names:
        cs = _sorted_tokens(name)
        if ps == cs:
            return 1.0
        m = SequenceMatcher(None, ps, cs)
        # real_quick_ratio/quick_ratio are upper bounds of ratio(): skip pairs that cannot reach the floor.
        if max(m.real_quick_ratio(), SequenceMatcher(None, person_name, name).real_quick_ratio()) < floor:
            continue
        if m.quick_ratio() < floor and SequenceMatcher(None, person_name, name).quick_ratio() < floor:
            continue
        best = max(best, name_score(person_name, name))
    return best


def score(person: Person, customer: Customer, floor: float = 0.0) -> tuple[float, tuple[str, ...]]:
    """(score, reasons) of a patient against a customer."""
    n = _best_name_score(person.name, customer, floor)
    email = normalize_email(person.email)
    same_email = bool(email) and email == customer.email
    reasons: list[str] = []
    if n > 0:
        reasons.append(f"name {n:.2f}")
    if same_email:
        reasons.append("e-mail exact")
        n = 1.0 if n >= 0.8 else max(n, EMAIL_ONLY_SCORE)
    return round(n, 4), tuple(reasons)


def suggest(
    people: Iterable[Person],
    customers: Iterable[Customer],
    *,
    min_score: float = DEFAULT_MIN_SCORE,
    margin: float = DEFAULT_MARGIN,
    top: int = 3,
) -> list[Suggestion]:
    """For each patient, the best-scoring customers (at least ``min_score``), best first."""
    pool = list(customers)
    by_email: dict[str, list[Customer]] = {}
    for c in pool:
        if c.email:
            by_email.setdefault(c.email, []).append(c)
    out: list[Suggestion] = []
    for person in people:
        scored: dict[str, Candidate] = {}
        for c in pool:
            s, reasons = score(person, c, floor=min_score)
            if s >= min_score:
                scored[c.id] = Candidate(c.id, c.display_name, s, reasons)
        for c in by_email.get(normalize_email(person.email), []):  # e-mail hits even with unlike names
            if c.id not in scored:
                s, reasons = score(person, c)
                scored[c.id] = Candidate(c.id, c.display_name, s, reasons)
        ranked = sorted(scored.values(), key=lambda c: (-c.score, c.display_name, c.customer_id))[:top]
        if not ranked:
            continue
        ambiguous = len(ranked) > 1 and round(ranked[0].score - ranked[1].score, 4) <= margin
        out.append(Suggestion(person.key, tuple(ranked), ambiguous, ranked[0]))
    return out


def auto_acceptable(s: Suggestion, threshold: float) -> bool:
    """Accept without a human look: the best score reaches the threshold and no runner-up is close."""
    return s.best is not None and not s.ambiguous and s.best.score >= threshold
