"""Dictation shaping with hand-written final sequences (model-style uppercase text in, document out)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.sinks.dictation import Delete, Dictation, Insert, ShapingConfig, edits_between, normalize_phrase


def run(finals, config=ShapingConfig()):
    d = Dictation(config)
    updates = [d.feed(f) for f in finals]
    return d, updates


def test_lowercase_with_sentence_capitals_and_punctuation_words():
    d, _ = run(["HELLO WORLD PERIOD", "HOW ARE YOU QUESTION MARK", "I THINK I'M FINE COMMA THANKS"])
    assert d.document == "Hello world. How are you? I think I'm fine, thanks"


def test_no_capital_without_a_sentence_end_and_two_word_phrases():
    d, _ = run(["THIS IS ONE", "THING FULL STOP WOW EXCLAMATION MARK AND COLON A SEMICOLON B"])
    assert d.document == "This is one thing. Wow! And: a; b"


def test_new_line_and_new_paragraph_start_sentences_without_spaces():
    d, _ = run(["DEAR ANNA COMMA NEW PARAGRAPH THANK YOU", "NEW LINE BYE"])
    assert d.document == "Dear anna,\n\nThank you\nBye"


def test_scratch_that_alone_removes_the_last_utterance_and_repeats():
    d, ups = run(["HELLO THERE PERIOD", "THIS IS WRONG", "SCRATCH THAT"])
    assert d.document == "Hello there."
    assert ups[-1].edits == (Delete(len(" This is wrong")),)
    assert ups[-1].scratched == 1
    d.feed("SCRATCH THAT")
    assert d.document == ""
    assert d.feed("SCRATCH THAT").edits == ()  # nothing left: nothing happens
    assert d.feed("AGAIN").document == "Again"


def test_scratch_that_inside_an_utterance_removes_only_what_came_before_it_in_that_utterance():
    d, ups = run(["KEEP THIS", "DROP THIS SCRATCH THAT REPLACE IT"])
    assert d.document == "Keep this replace it"
    assert ups[-1].edits == (Insert(" replace it"),)  # what was scratched was never typed


def test_capitalisation_follows_the_document_after_a_scratch():
    d, _ = run(["FIRST PERIOD", "SECOND", "SCRATCH THAT", "THIRD"])
    assert d.document == "First. Third"


def test_edits_type_only_the_difference():
    _, ups = run(["ONE TWO", "THREE PERIOD", "NEW LINE"])
    assert [u.edits for u in ups] == [(Insert("One two"),), (Insert(" three."),), (Insert("\n"),)]
    assert [u.latest for u in ups] == ["One two", "three.", "\n"]


def test_punctuation_words_inside_longer_words_are_kept():
    d, _ = run(["THE PERIODIC TABLE COMMAS"])
    assert d.document == "The periodic table commas"


def test_everything_switchable_off():
    finals = ["HELLO PERIOD", "SCRATCH THAT", "I NEW LINE"]
    raw, _ = run(finals, ShapingConfig(enabled=False))
    assert raw.document == "HELLO PERIOD SCRATCH THAT I NEW LINE"
    lower, _ = run(finals, ShapingConfig(capitalize=False))
    assert lower.document == "i\n"
    literal, _ = run(finals, ShapingConfig(spoken_punctuation=False))
    assert literal.document == "I new line"  # scratch that removed "Hello period"
    no_edit, _ = run(finals, ShapingConfig(editing=False))
    assert no_edit.document == "Hello. Scratch that I\n"


def test_custom_words():
    cfg = dataclasses.replace(ShapingConfig(), punctuation=(("dot", "."), ("smiley", ":)")),
                              scratch_phrases=("undo",))
    d, _ = run(["A DOT B SMILEY", "C UNDO"], cfg)
    assert d.document == "A. B:)"


def test_insert_is_literal_and_scratchable():
    d = Dictation()
    d.feed("HELLO")
    assert d.insert(" Best regards").document == "Hello Best regards"
    assert d.feed("SCRATCH THAT").document == "Hello"


def test_normalize_phrase():
    assert normalize_phrase("  Open, the EDITOR! ") == "open the editor"
    assert normalize_phrase("; touch x") == "touch x"
    assert normalize_phrase("IT'S") == "it's"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["HELLO", "WORLD", "PERIOD", "COMMA", "NEW LINE", "NEW PARAGRAPH",
                                          "SCRATCH THAT", "QUESTION MARK", "I", "IT'S"]), min_size=1, max_size=6)
                .map(" ".join), max_size=8))
def test_edits_replayed_on_a_typed_copy_give_the_document(finals):
    """What --type does (backspaces and typing) always ends with exactly the dictated document."""
    d = Dictation()
    typed = ""
    for f in finals:
        update = d.feed(f)
        for e in update.edits:
            if isinstance(e, Delete):
                assert e.chars <= len(typed)
                typed = typed[: len(typed) - e.chars]
            else:
                typed += e.text
        assert typed == update.document == d.document
        assert "  " not in typed and not typed.startswith(" ")


@pytest.mark.parametrize("old,new", [("", "abc"), ("abc", ""), ("abc", "abd"), ("same", "same"), ("ab", "abc")])
def test_edits_between(old, new):
    out = old
    for e in edits_between(old, new):
        out = out[: len(out) - e.chars] if isinstance(e, Delete) else out + e.text
    assert out == new
