"""The search tokenizer (shared/search_text.py): normalisation, terms, tokens, queries, highlights."""

from __future__ import annotations

import random
import re
import string
import unicodedata

import pytest
import sqlalchemy as sa

from shared.search_text import (
    CJK_RANGES,
    SNIPPET_CHARS,
    bigram_token,
    highlights,
    index_tokens,
    is_search_object,
    matches,
    normalize,
    parse_query,
    snippet,
    terms,
    unigram_token,
    word_token,
)

TOKEN = re.compile(r"[a-z0-9]{3,84}")


def marked(q: str, text: str) -> list[str]:
    return [text[start:end] for start, end in highlights(parse_query(q), text)]


def test_latin_text_is_case_folded_nfkc_normalised_and_cut_at_word_boundaries():
    assert list(terms(normalize("Hello, WORLD! it's Straße ＡＢＣ１２３ ﬁne"))) == [
        ("word", "hello"),
        ("word", "world"),
        ("word", "it"),
        ("word", "s"),
        ("word", "strasse"),
        ("word", "abc123"),
        ("word", "fine"),
    ]


def test_cjk_runs_are_cut_from_words_and_punctuation():
    assert list(terms(normalize("我们讨论项目管理，用 Python3 写。東京タワー・한국어"))) == [
        ("cjk", "我们讨论项目管理"),
        ("cjk", "用"),
        ("word", "python3"),
        ("cjk", "写"),
        ("cjk", "東京タワー"),  # the katakana middle dot separates, the prolonged sound mark does not
        ("cjk", "한국어"),
    ]


def test_half_width_katakana_and_emoji():
    assert list(terms(normalize("ﾀﾜｰ 😀👍🏽 ok"))) == [("cjk", "タワー"), ("word", "ok")]


def _kind(point: int) -> str | None:
    """What the module docstring says a code point is: `cjk`, `word` or None (a separator)."""
    if any(low <= point <= high for low, high in CJK_RANGES):
        return "cjk"
    selector = 0xFE00 <= point <= 0xFE0F or 0xE0100 <= point <= 0xE01EF
    category = unicodedata.category(chr(point))
    if 0x30 <= point < 0x20000 and not selector and (category[0] in "LN" or category in ("Mn", "Mc")):
        return "word"
    return None


def test_every_code_point_is_classed_as_the_docstring_says():
    """Each code point alone, NUL-separated: the compiled classes (split so the large ones match by
    bitmap, not range by range) class all of them as a per-character reading of the rules does."""
    points = [point for point in range(0x110000) if not 0xD800 <= point <= 0xDFFF]
    found = {term: kind for kind, term in terms("\0".join(map(chr, points)))}
    assert all(len(term) == 1 for term in found)
    assert found == {chr(point): kind for point in points if (kind := _kind(point)) is not None}


def test_runs_of_mixed_scripts_are_cut_where_the_class_changes():
    text = "abc\U00020000\U00020001de\U0001d400f\u0301 \U0001b000か"
    assert list(terms(text)) == [
        ("word", "abc"),
        ("cjk", "\U00020000\U00020001"),
        ("word", "de\U0001d400f\u0301"),  # a mathematical letter (outside the BMP) and a combining mark
        ("cjk", "\U0001b000か"),
    ]


def test_ascii_text_is_indexed_as_the_general_path_indexes_it():
    """ASCII text takes a shortcut; a non-ASCII separator (a no-break space) sends the same text down
    the general path, which must give the same tokens in the same order."""
    rng = random.Random(15)
    alphabet = string.printable + "\x00\x7f" + "xyz" * 20
    texts = ["", "Hello, World hello", "a" * 40 + " " + "b" * 41, "x1 X1 x-1 _x_ 42"]
    texts += ["".join(rng.choices(alphabet, k=rng.randint(0, 300))) for _ in range(300)]
    for text in texts:
        assert index_tokens(text) == index_tokens(text + "\u00a0"), text


def test_index_tokens_hold_each_word_unigram_and_bigram_once():
    tokens = index_tokens("项目 项目管理 Plan plan").split()
    assert len(tokens) == len(set(tokens))
    unigrams = {unigram_token(char) for char in "项目管理"}
    bigrams = {bigram_token(pair) for pair in ("项目", "目管", "管理")}
    assert set(tokens) == unigrams | bigrams | {word_token("plan")}


@pytest.mark.parametrize(
    "text", ["a", "I", "the", "x" * 300, "café", "Привет", "\U0002a700", "\U0010ffff", "项", "ｶﾞ", "한"]
)
def test_every_token_is_3_to_84_ascii_letters_or_digits(text):
    """What every backend's parser keeps whole, and above MariaDB's innodb_ft_min_token_size and its
    stop words (`a`, `i`, `the` become `wda`, `wdi`, `wdthe`)."""
    for token in index_tokens(text + " " + text + "项").split():
        assert TOKEN.fullmatch(token), token
    assert index_tokens("the a I") == "wdthe wda wdi"


def test_long_and_non_ascii_words_are_hashed_distinctly():
    assert word_token("café") != word_token("cafe") and word_token("café").startswith("wh")
    assert word_token("x" * 41) != word_token("x" * 42)
    assert word_token("x" * 40) == "wd" + "x" * 40


def test_a_query_needs_every_term():
    query = parse_query("项目 Plan")
    assert (query.words, query.runs, query.exact) == (("plan",), ("项目",), True)
    assert matches(query, "项目管理的 PLAN")
    assert not matches(query, "项目 planning")
    assert not matches(query, "plan 项 目")


def test_a_run_of_one_character_uses_its_unigram_longer_runs_their_bigrams():
    assert parse_query("目").tokens == (unigram_token("目"),)
    assert parse_query("项目").tokens == (bigram_token("项目"),)
    long = parse_query("项目管理")
    assert long.tokens == (bigram_token("项目"), bigram_token("目管"), bigram_token("管理"))
    assert not long.exact
    assert matches(long, "我们的项目管理") and not matches(long, "项目很多，目管得好，管理也好")


def test_a_query_with_nothing_searchable_is_none():
    assert parse_query("😀 !! ，。") is None
    assert parse_query(" ") is None


def test_highlights_are_spans_of_the_original_text():
    assert marked("plan", "The PLAN, planning, Plan.") == ["PLAN", "Plan"]
    assert marked("目", "项目管理 目标") == ["目", "目"]
    assert marked("项目 管理", "项目管理") == ["项目管理"]  # adjacent matches merge
    assert marked("abc", "ＡＢＣ and abc") == ["ＡＢＣ", "abc"]
    assert marked("タワー", "ﾀﾜｰに行く") == ["ﾀﾜｰ"]
    assert marked("fine", "a ﬁne day") == ["ﬁne"]  # a ligature expands to two letters


def test_a_snippet_shows_the_first_match_in_context():
    text = "开" * 300 + "Plan" + "尾" * 300
    cut = snippet(parse_query("plan"), text)
    assert cut["snippet"].startswith("…") and cut["snippet"].endswith("…")
    assert len(cut["snippet"]) == SNIPPET_CHARS + 2
    [[start, end]] = cut["highlights"]
    assert cut["snippet"][start:end] == "Plan"
    short = snippet(parse_query("项目"), "项目")
    assert short == {"snippet": "项目", "highlights": [[0, 2]]}


def test_the_objects_left_out_of_the_drift_check_are_the_search_indexes_only():
    for name in (
        "ix_chat_messages_search",
        "chat_messages_search",
        "chat_sessions_search_idx",
        "ai_conversations_search_data",
        "search_vector",
    ):
        assert is_search_object(name)
    for name in ("chat_messages", "ix_chat_messages_deleted_at", "search_tokens", None):
        assert not is_search_object(name)


def test_the_postgresql_parser_keeps_every_token_whole(database_server):
    if database_server.backend != "postgresql":
        pytest.skip("PostgreSQL's text search parser")
    url = database_server.create("search_tokens")
    tokens = index_tokens("项目 the a 1 2024 x9 Ab café 한국어 ﾀﾜｰ " + "z" * 80).split()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            for token in tokens:
                vector = connection.execute(sa.text("SELECT to_tsvector('simple', :t)::text"), {"t": token})
                assert vector.scalar_one() == f"'{token}':1"
    finally:
        engine.dispose()
