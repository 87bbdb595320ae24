"""Customer matching rules (pure): normalisation, scores, ambiguity, auto-accept."""

from __future__ import annotations

from shared.domain import matching as m


def cust(cid: str, display: str, email: str | None = None, **names: str) -> m.Customer:
    row = {"Id": cid, "DisplayName": display, **names}
    if email:
        row["PrimaryEmailAddr"] = {"Address": email}
    return m.Customer.from_qbo(row)


def test_names_are_normalised_for_case_accents_punctuation_and_titles() -> None:
    assert m.normalize_name("Dr. José  O'Neil-Smith, Jr.") == "jose oneil smith"
    assert m.name_score("smith john", "john smith") == 1.0


def test_exact_name_in_any_order_scores_one() -> None:
    person = m.Person("p1", "John", "Smith")
    assert m.score(person, cust("1", "Smith, John"))[0] == 1.0


def test_email_exact_is_strong_even_with_a_different_name() -> None:
    person = m.Person("p1", "Maria", "Garcia-Lopez", "MGarcia@Example.org")
    s, reasons = m.score(person, cust("9", "M. Garcia (billing)", "mgarcia@example.org"))
    assert s >= m.EMAIL_ONLY_SCORE and "e-mail exact" in reasons


def test_two_close_candidates_are_ambiguous_and_never_auto_accepted() -> None:
    [s] = m.suggest([m.Person("p1", "Jon", "Smyth")], [cust("1", "John Smith"), cust("2", "Jon Smith")])
    assert s.ambiguous
    assert not m.auto_acceptable(s, threshold=0.0)


def test_a_clear_winner_is_auto_acceptable_above_the_threshold_only() -> None:
    [s] = m.suggest([m.Person("p1", "Ada", "Lovelace")], [cust("1", "Ada Lovelace"), cust("2", "Alan Turing")])
    assert not s.ambiguous and s.best is not None and s.best.customer_id == "1"
    assert m.auto_acceptable(s, 0.92)
    [weak] = m.suggest([m.Person("p2", "Adam", "Lovelock")], [cust("1", "Ada Lovelace")])
    assert not m.auto_acceptable(weak, 0.92)


def test_no_candidate_below_min_score() -> None:
    assert m.suggest([m.Person("p1", "Zed", "Quinn")], [cust("1", "Ada Lovelace")]) == []
