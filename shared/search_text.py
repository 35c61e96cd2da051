"""Search text: the one tokenizer both services index and query with (docs/search.md).

Text is normalised with NFKC and case folding (full-width `ＡＢＣ` is `abc`, `Straße` is `strasse`), then cut
into two kinds of terms:

- a *word*: a run of letters, digits and combining marks outside the CJK scripts (Latin, Cyrillic,
  Greek, Arabic, ...). A query word matches whole words only: `plan` finds "Plan B", not "planning".
- a *CJK run*: a run of Chinese characters, Japanese kana or Korean Hangul. Any run of one or more
  characters matches where it occurs inside a stored run: `项目`, `目` and `目管` all find `项目管理`.

Anything else (spaces, punctuation, symbols, emoji) separates terms and is not searchable.

The index holds, per text, one token per distinct word and per distinct CJK unigram and bigram, as
ASCII letters and digits only, each at least 3 characters long: every backend's full-text parser keeps
such a token whole, and MariaDB's `innodb_ft_min_token_size` (3) and stop words (`a`, `the`, `in`, ...)
drop none of them. A query needs every term (AND): a word by its token, a CJK run of one or two characters
by its unigram or bigram, a longer run by all of its bigrams, confirmed by a substring test (`matches`)
because the bigrams of `项目管理` can also occur apart.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import mysql

QUERY_MAX = 200
SNIPPET_CHARS = 120  # code points of context a snippet shows
SNIPPET_LEAD = 30  # of which before the first match
WORD_TOKEN_MAX = 40  # longer (or non-ASCII) words are indexed by a hash of them

# Han (with its extensions and compatibility forms), iteration marks, kana and Hangul (syllables, jamo).
CJK_RANGES = (
    (0x1100, 0x11FF),
    (0x2E80, 0x2FDF),
    (0x3005, 0x3007),
    (0x3021, 0x3029),
    (0x3031, 0x3035),
    (0x3038, 0x303C),
    (0x3041, 0x30FA),  # hiragana and katakana, without the middle dot (・, punctuation) ...
    (0x30FC, 0x30FF),  # ... but with the prolonged sound mark (ー)
    (0x3130, 0x318F),
    (0x31F0, 0x31FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xA960, 0xA97F),
    (0xAC00, 0xD7FF),
    (0xF900, 0xFAFF),
    (0x1B000, 0x1B16F),
    (0x20000, 0x3FFFF),
)
# Variation selectors are marks, but only choose a glyph: never part of a word.
_NOT_WORD = ((0xFE00, 0xFE0F), (0xE0100, 0xE01EF))


def _class(ranges: list[tuple[int, int]]) -> str:
    return "".join(
        re.escape(chr(low)) if low == high else f"{re.escape(chr(low))}-{re.escape(chr(high))}"
        for low, high in ranges
    )


def _terms_patterns(cjk: list[tuple[int, int]], word: list[tuple[int, int]]) -> tuple[re.Pattern, re.Pattern]:
    """The terms regex for text inside the BMP, and for any text.

    `re` compiles a class wholly inside the BMP to a bitmap, but one reaching past it to a list of
    ranges tried one by one: with the word class's ~700 ranges that cost about 1 us per character, a
    sixth of a chat turn's CPU (bench/turn_cpu.py --profile). So each class is split at U+FFFF; text
    with no character beyond it (nearly all) uses the bitmaps alone, and in other text the slow class is
    tried only behind a one-range test that the character is beyond the BMP."""

    def halves(ranges: list[tuple[int, int]]) -> tuple[str, str]:
        bmp = [(low, min(high, 0xFFFF)) for low, high in ranges if low <= 0xFFFF]
        astral = [(max(low, 0x10000), high) for low, high in ranges if high > 0xFFFF]
        return f"[{_class(bmp)}]", f"(?={_ASTRAL.pattern})[{_class(astral)}]"

    (cjk_bmp, cjk_astral), (word_bmp, word_astral) = halves(cjk), halves(word)
    bmp = re.compile(f"(?P<cjk>{cjk_bmp}+)|(?P<word>{word_bmp}+)")
    full = re.compile(f"(?P<cjk>(?:{cjk_bmp}|{cjk_astral})++)|(?P<word>(?:{word_bmp}|{word_astral})++)")
    return bmp, full


def _word_ranges() -> list[tuple[int, int]]:
    """Code points of letters, digits and combining marks (categories L, N, Mn, Mc) outside CJK."""
    excluded = CJK_RANGES + _NOT_WORD
    ranges: list[tuple[int, int]] = []
    for point in range(0x30, 0x20000):
        category = unicodedata.category(chr(point))
        if category[0] not in "LN" and category not in ("Mn", "Mc"):
            continue
        if any(low <= point <= high for low, high in excluded):
            continue
        if ranges and ranges[-1][1] == point - 1:
            ranges[-1] = (ranges[-1][0], point)
        else:
            ranges.append((point, point))
    return ranges


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
_TERMS_BMP, _TERMS = _terms_patterns(list(CJK_RANGES), _word_ranges())
_ASCII_WORD = re.compile(f"[a-z0-9]{{1,{WORD_TOKEN_MAX}}}")
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_ASCII_TERMS = re.compile("[a-z0-9]+")  # the terms of lowered ASCII text (all words)


def normalize(text: str) -> str:
    """NFKC with case folding: the form every comparison uses."""
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def terms(normalized: str) -> Iterator[tuple[str, str]]:
    """(`word` or `cjk`, term) for each term of a normalised text, in order."""
    for match in _term_matches(normalized):
        yield match.lastgroup, match.group()


def _term_matches(normalized: str) -> Iterator[re.Match]:
    return (_TERMS if _ASTRAL.search(normalized) else _TERMS_BMP).finditer(normalized)


@lru_cache(maxsize=65_536)
def _char(point: int) -> str:
    """A code point in 4 base-36 digits (36**4 > 0x10FFFF)."""
    digits = ""
    for _ in range(4):
        point, rest = divmod(point, 36)
        digits = _B36[rest] + digits
    return digits


def word_token(word: str) -> str:
    """`wd<word>` for a short ASCII word, `wh<hash>` for any other: letters and digits, 3+ characters."""
    if _ASCII_WORD.fullmatch(word):
        return "wd" + word
    return "wh" + hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def unigram_token(char: str) -> str:
    return "u" + _char(ord(char))


def bigram_token(pair: str) -> str:
    return "b" + _char(ord(pair[0])) + _char(ord(pair[1]))


def index_tokens(text: str) -> str:
    """The index tokens of a text (message content or title), space-separated, each once."""
    if text.isascii():  # most texts: every term is a word of [a-z0-9] once lowered
        words = dict.fromkeys(_ASCII_TERMS.findall(text.lower()))
        return " ".join("wd" + word if len(word) <= WORD_TOKEN_MAX else word_token(word) for word in words)
    tokens: dict[str, None] = {}
    for kind, term in terms(normalize(text)):
        if kind == "word":
            tokens[word_token(term)] = None
            continue
        for i, char in enumerate(term):
            tokens[unigram_token(char)] = None
            if i:
                tokens[bigram_token(term[i - 1 : i + 1])] = None
    return " ".join(tokens)


@dataclass(frozen=True)
class Query:
    """A parsed query: its words and CJK runs (normalised), and the index tokens every hit holds."""

    words: tuple[str, ...]
    runs: tuple[str, ...]
    tokens: tuple[str, ...]

    @property
    def exact(self) -> bool:
        """Whether holding every token is a match (no run longer than a bigram to confirm)."""
        return all(len(run) <= 2 for run in self.runs)


def parse_query(text: str) -> Query | None:
    """The query's terms; None when it has none (only spaces, punctuation, emoji)."""
    words: dict[str, None] = {}
    runs: dict[str, None] = {}
    tokens: dict[str, None] = {}
    for kind, term in terms(normalize(text)):
        if kind == "word":
            words[term] = None
            tokens[word_token(term)] = None
        elif len(term) == 1:
            runs[term] = None
            tokens[unigram_token(term)] = None
        else:
            runs[term] = None
            for i in range(1, len(term)):
                tokens[bigram_token(term[i - 1 : i + 1])] = None
    if not tokens:
        return None
    return Query(tuple(words), tuple(runs), tuple(tokens))


def matches(query: Query, text: str) -> bool:
    """Whether `text` holds every term of the query: each word as a whole word, each run anywhere in a
    CJK run. Exact: the test that confirms what the index found."""
    normalized = normalize(text)
    if any(run not in normalized for run in query.runs):
        return False
    if not query.words:
        return True
    words = {term for kind, term in terms(normalized) if kind == "word"}
    return all(word in words for word in query.words)


# --- highlighting -----------------------------------------------------------------------------------


def _mapped(text: str) -> tuple[str, list[int]]:
    """The text normalised one character at a time, and for each character the index in `text` it came
    from: how a match in the normalised form is found again in the original."""
    if text.isascii():
        return text.lower(), list(range(len(text)))
    chars: list[str] = []
    origin: list[int] = []
    for i, char in enumerate(text):
        folded = normalize(char)
        chars.append(folded)
        origin.extend([i] * len(folded))
    return "".join(chars), origin


def highlights(query: Query, text: str) -> list[tuple[int, int]]:
    """The spans `[start, end)` of `text` (code point offsets) that match a term of the query, in order
    and not overlapping. Matches are found character by character: a match that only full-string
    normalisation makes (a half-width `ｶﾞ` composing to `ガ`) is found but may go unmarked."""
    normalized, origin = _mapped(text)
    spans: list[tuple[int, int]] = []
    words = set(query.words)
    for match in _term_matches(normalized):
        if match.lastgroup == "word":
            if normalize(match.group()) in words:
                spans.append((match.start(), match.end()))
            continue
        for run in query.runs:
            start = match.group().find(run)
            while start != -1:
                spans.append((match.start() + start, match.start() + start + len(run)))
                start = match.group().find(run, start + 1)
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return [(origin[start], origin[end - 1] + 1) for start, end in merged]


def snippet(query: Query, text: str) -> dict:
    """Up to SNIPPET_CHARS code points of `text` around its first match, with `…` where it was cut,
    and the matches in it as `[start, end)` code point offsets into the snippet."""
    spans = highlights(query, text)
    begin = max(0, spans[0][0] - SNIPPET_LEAD) if spans else 0
    end = min(len(text), begin + SNIPPET_CHARS)
    begin = max(0, min(begin, end - SNIPPET_CHARS))
    lead = "…" if begin > 0 else ""
    shown = lead + text[begin:end] + ("…" if end < len(text) else "")
    shift = len(lead) - begin
    marked = [
        [max(start, begin) + shift, min(stop, end) + shift]
        for start, stop in spans
        if start < end and stop > begin
    ]
    return {"snippet": shown, "highlights": marked}


# --- keeping the tokens with the text ---------------------------------------------------------------


def keep_tokens(model: type, source: str, *, normalized: str | None = None) -> None:
    """Keep `model.search_tokens` (and the column `normalized`, when named: the text normalised) equal
    to what `model.<source>` gives, on every ORM write: objects flushed (inserted or changed) and
    INSERT/UPDATE statements on the model run through a Session (`db.session.execute(sa.update(...))`,
    as crud.py writes). Plain Core statements on a connection are not seen: a bulk loader computes
    `index_tokens` itself (bench/search.py)."""
    mapper = sa.inspect(model)

    def derived(text: str | None) -> dict[str, str | None]:
        values = {"search_tokens": None if text is None else index_tokens(text)}
        if normalized:
            values[normalized] = None if text is None else normalize(text)
        return values

    def on_insert(_mapper, _connection, target) -> None:
        for key, value in derived(getattr(target, source)).items():
            setattr(target, key, value)

    def on_update(_mapper, _connection, target) -> None:
        if sa.inspect(target).attrs[source].history.has_changes():
            on_insert(_mapper, _connection, target)

    def on_execute(state: orm.ORMExecuteState):
        if not (state.is_update or state.is_insert) or state.bind_mapper is not mapper:
            return None
        statement, params = state.statement, state.parameters
        values = {getattr(key, "key", key): value for key, value in (statement._values or {}).items()}
        if source in values:
            value = values[source]
            if not isinstance(value, sa.BindParameter) or not isinstance(value.value, str | None):
                raise TypeError(
                    f"{model.__name__}.{source} set by an SQL expression: its tokens need the text"
                )
            statement = statement.values(**derived(value.value))
        if isinstance(params, dict) and source in params:
            params = {**params, **derived(params[source])}
        elif isinstance(params, list) and params and source in params[0]:
            params = [{**row, **derived(row[source])} for row in params]
        if statement is state.statement and params is state.parameters:
            return None
        return state.invoke_statement(statement=statement, params=params)

    sa.event.listen(model, "before_insert", on_insert)
    sa.event.listen(model, "before_update", on_update)
    sa.event.listen(orm.Session, "do_orm_execute", on_execute)


SEARCH_TABLES = ("chat_messages", "chat_sessions", "ai_conversations")


def is_search_object(name: str | None) -> bool:
    """Whether a database object is part of a search index that only one backend has (migrations
    chat 0009 and conversation 0005): PostgreSQL's generated column `search_vector`, PostgreSQL's and
    MariaDB's index `ix_<table>_search`, SQLite's FTS5 table `<table>_search` and its shadow tables."""
    return bool(name) and (
        name == "search_vector"
        or any(
            name == f"ix_{table}_search" or name == f"{table}_search" or name.startswith(f"{table}_search_")
            for table in SEARCH_TABLES
        )
    )


def include_object(_object, name, _type, reflected, _compare_to) -> bool:
    """Alembic's `include_object`: the models leave out the search indexes (they differ per backend),
    so autogenerate and the drift check must not see them as objects to drop."""
    return not (reflected and is_search_object(name))


def index_match(
    dialect: str, table: sa.Table, rowid: sa.ColumnElement, tokens: tuple[str, ...]
) -> sa.ColumnElement[bool]:
    """The condition "the row's `search_tokens` hold every token", answered by the backend's index:
    GIN on the generated `search_vector` (PostgreSQL), FULLTEXT (MariaDB), the FTS5 table
    `<table>_search` whose rowid is `rowid` (SQLite)."""
    if dialect == "postgresql":
        vector = sa.literal_column(f"{table.name}.search_vector")
        return vector.op("@@")(
            sa.func.to_tsquery(sa.literal_column("'simple'::regconfig"), " & ".join(tokens))
        )
    if dialect in ("mysql", "mariadb"):
        return mysql.match(
            table.c.search_tokens, against=" ".join(f"+{token}" for token in tokens)
        ).in_boolean_mode()
    fts = sa.table(f"{table.name}_search", sa.column("rowid"))
    hits = sa.select(fts.c.rowid).where(sa.literal_column(fts.name).op("MATCH")(" AND ".join(tokens)))
    return rowid.in_(hits)


def token_test(dialect: str, rows: sa.FromClause, tokens: tuple[str, ...]) -> sa.ColumnElement[bool]:
    """The same condition as `index_match`, tested on each row of `rows` without the index (for a
    bounded set of rows): `search_vector @@ query` on PostgreSQL, each token as a space-delimited
    word of `search_tokens` elsewhere."""
    if dialect == "postgresql":
        query = sa.func.to_tsquery(sa.literal_column("'simple'::regconfig"), " & ".join(tokens))
        return rows.c.search_vector.op("@@")(query)
    padded = sa.literal(" ") + rows.c.search_tokens + sa.literal(" ")
    return sa.and_(*(padded.contains(f" {token} ") for token in tokens))
