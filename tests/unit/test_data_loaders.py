"""Loaders: every MovieLens layout, the generic CSV, the shipped data, and bad input."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from securefed.data import (
    MOVIELENS_100K_GENRES,
    Interactions,
    load_interactions_csv,
    load_movielens,
)
from securefed.errors import ConfigError, DataError

SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "data" / "ml-latest-small"

# Expected values from shared/data/SOURCES.md (the data store's provenance record),
# repeated in examples/data/ml-latest-small/SOURCE.md.
SHIPPED_SHA256 = {
    "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
    "movies.csv": "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",
    "README.txt": "e165937702ae1fac9237b6bd377f03d027f7ef97175d4a04a203e8b12d5516ea",
}


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_bytes(text.encode("utf-8"))
    return path


def _where(path: Path, line: int) -> str:
    """The ``file:line:`` prefix every data error starts with, as a regex."""
    return re.escape(f"{path}:{line}:")


# -- the shipped data ----------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> Interactions:
    return load_movielens(SHIPPED)


def test_shipped_files_checksums():
    for name, expected in SHIPPED_SHA256.items():
        path = SHIPPED / name
        assert path.is_file(), f"{name} is missing from {SHIPPED}"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == expected, name
    source = (SHIPPED / "SOURCE.md").read_text(encoding="utf-8")
    for expected in SHIPPED_SHA256.values():
        assert expected in source


def test_shipped_ratings_counts(shipped):
    assert len(shipped) == 100_836
    assert shipped.n_users == 610
    assert shipped.n_items == 9_724
    assert shipped.source == "movielens-csv:ml-latest-small"
    assert np.array_equal(np.unique(shipped.users), np.arange(610))
    assert np.array_equal(np.unique(shipped.items), np.arange(9_724))
    # Dense indices follow ascending original id.
    assert np.all(np.diff(shipped.user_ids) > 0)
    assert np.all(np.diff(shipped.item_ids) > 0)
    assert set(np.unique(shipped.ratings).tolist()) == {x / 2 for x in range(1, 11)}


def test_shipped_first_row_and_metadata(shipped):
    # ratings.csv line 2: 1,1,4.0,964982703
    assert shipped.user_ids[shipped.users[0]] == 1
    assert shipped.item_ids[shipped.items[0]] == 1
    assert shipped.ratings[0] == np.float32(4.0)
    assert shipped.timestamps[0] == 964_982_703
    assert shipped.item_titles is not None
    assert shipped.item_genres is not None
    index = {int(movie): k for k, movie in enumerate(shipped.item_ids)}
    assert shipped.item_titles[index[1]] == "Toy Story (1995)"
    assert shipped.item_genres[index[1]] == (
        "Adventure",
        "Animation",
        "Children",
        "Comedy",
        "Fantasy",
    )
    # Quoted titles with commas and doubled quotes.
    assert shipped.item_titles[index[11]] == "American President, The (1995)"
    assert shipped.item_titles[index[7789]] == "11'09\"01 - September 11 (2002)"
    # "(no genres listed)" loads as no genre.
    assert shipped.item_genres[index[122888]] == ()


def test_arrays_are_read_only(shipped):
    for name in ("users", "items", "ratings", "timestamps", "user_ids", "item_ids"):
        with pytest.raises(ValueError, match="read-only"):
            getattr(shipped, name)[0] = 0


# -- each layout on small fixtures ---------------------------------------------------

LATEST_RATINGS = (
    "userId,movieId,rating,timestamp\r\n7,20,4.5,100\r\n3,10,3.0,200\r\n\r\n7,10,5.0,50\r\n"
)
LATEST_MOVIES = (
    "movieId,title,genres\r\n"
    '10,"Good, the Bad and the Ugly, The (1966)",Action|Western\r\n'
    '20,"Say ""Hello"" (2001)",(no genres listed)\r\n'
    "30,Never Rated (1999),Drama\r\n"
)


def test_latest_layout(tmp_path):
    _write(tmp_path / "ratings.csv", LATEST_RATINGS)
    _write(tmp_path / "movies.csv", LATEST_MOVIES)
    data = load_movielens(tmp_path)
    assert data.user_ids.tolist() == [3, 7]
    assert data.item_ids.tolist() == [10, 20]  # movie 30 is never rated: not an item
    assert data.users.tolist() == [1, 0, 1]
    assert data.items.tolist() == [1, 0, 0]
    assert data.ratings.tolist() == [4.5, 3.0, 5.0]
    assert data.ratings.dtype == np.float32
    assert data.timestamps.tolist() == [100, 200, 50]
    assert data.item_titles == ("Good, the Bad and the Ugly, The (1966)", 'Say "Hello" (2001)')
    assert data.item_genres == (("Action", "Western"), ())


def test_listed_items_are_the_whole_catalogue(tmp_path):
    _write(tmp_path / "ratings.csv", LATEST_RATINGS)
    _write(tmp_path / "movies.csv", LATEST_MOVIES)
    data = load_movielens(tmp_path, items="listed")
    assert data.item_ids.tolist() == [10, 20, 30]  # movie 30 is listed, never rated
    assert data.items.tolist() == [1, 0, 0]
    assert data.n_items == 3
    assert data.item_titles[2] == "Never Rated (1999)"
    rated = load_movielens(tmp_path)
    assert rated.users.tolist() == data.users.tolist()
    assert rated.item_titles == data.item_titles[:2]


def test_listed_items_need_a_catalogue_that_lists_every_rated_movie(tmp_path):
    _write(tmp_path / "ratings.csv", LATEST_RATINGS)
    with pytest.raises(DataError, match="needs this movies file"):
        load_movielens(tmp_path, items="listed")
    _write(tmp_path / "movies.csv", "movieId,title,genres\n10,Ten (1990),Drama\n")
    with pytest.raises(DataError, match=r"movie id 20 is rated in ratings\.csv but not listed"):
        load_movielens(tmp_path, items="listed")
    with pytest.raises(ConfigError, match="items must be"):
        load_movielens(tmp_path, items="all")


def test_latest_layout_without_movies_file(tmp_path):
    _write(tmp_path / "ratings.csv", LATEST_RATINGS)
    data = load_movielens(tmp_path)
    assert data.item_titles is None
    assert data.item_genres is None
    assert len(data) == 3


def test_1m_layout_latin1(tmp_path):
    _write(tmp_path / "ratings.dat", "2::1193::5::978300760\n1::661::3::978302109\n1::1193::4::1\n")
    _write(
        tmp_path / "movies.dat",
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n".encode("latin-1")
        + "1193::Misérables, Les (1995)::Drama\n".encode("latin-1"),
    )
    data = load_movielens(tmp_path)
    assert data.source == "movielens-dat:" + tmp_path.name
    assert data.user_ids.tolist() == [1, 2]
    assert data.item_ids.tolist() == [661, 1193]
    assert data.users.tolist() == [1, 0, 0]
    assert data.items.tolist() == [1, 0, 1]
    assert data.ratings.tolist() == [5.0, 3.0, 4.0]
    assert data.item_titles == ("James and the Giant Peach (1996)", "Misérables, Les (1995)")
    assert data.item_genres == (("Animation", "Children's", "Musical"), ("Drama",))


def _u_item_line(movie: int, title: str, flags: list[int]) -> str:
    bits = [0] * len(MOVIELENS_100K_GENRES)
    for k in flags:
        bits[k] = 1
    return f"{movie}|{title}|01-Jan-1995||http://example.invalid/|" + "|".join(map(str, bits))


def test_100k_layout_latin1(tmp_path):
    _write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t4\t5\n")
    u_item = "\n".join(
        [
            _u_item_line(242, "Kolya (1996)", [5]),
            _u_item_line(302, "L.A. Confidential (1997)", [6, 10, 16]),
            _u_item_line(303, "Café au lait (1993)", [0]),
        ]
    )
    _write(tmp_path / "u.item", (u_item + "\n").encode("latin-1"))
    data = load_movielens(tmp_path)
    assert data.source == "movielens-100k:" + tmp_path.name
    assert data.user_ids.tolist() == [186, 196]
    assert data.item_ids.tolist() == [242, 302]
    assert data.users.tolist() == [1, 0, 1]
    assert data.ratings.tolist() == [3.0, 3.0, 4.0]
    assert data.item_titles == ("Kolya (1996)", "L.A. Confidential (1997)")
    assert data.item_genres == (("Comedy",), ("Crime", "Film-Noir", "Thriller"))


def test_100k_latin1_title_and_unknown_genre(tmp_path):
    _write(tmp_path / "u.data", "1\t303\t5\t10\n")
    _write(
        tmp_path / "u.item",
        (_u_item_line(303, "Café au lait (1993)", [0]) + "\n").encode("latin-1"),
    )
    data = load_movielens(tmp_path)
    assert data.item_titles == ("Café au lait (1993)",)
    assert data.item_genres == ((),)  # the "unknown" flag means no genre


def test_layout_precedence(tmp_path):
    _write(tmp_path / "ratings.csv", LATEST_RATINGS)
    _write(tmp_path / "u.data", "1\t1\t1\t1\n")
    assert load_movielens(tmp_path).source.startswith("movielens-csv:")


def test_generic_csv(tmp_path):
    path = _write(
        tmp_path / "log.csv",
        "\ufeffwhen;who;what;score;note\n30;5;100;2.5;x\n10;5;200;1;y\n20;9;100;0.5;z\n",
    )
    data = load_interactions_csv(
        path,
        user_column="who",
        item_column="what",
        rating_column="score",
        timestamp_column="when",
        delimiter=";",
    )
    assert data.source == "csv:log.csv"
    assert data.user_ids.tolist() == [5, 9]
    assert data.item_ids.tolist() == [100, 200]
    assert data.users.tolist() == [0, 0, 1]
    assert data.items.tolist() == [0, 1, 0]
    assert data.ratings.tolist() == [2.5, 1.0, 0.5]
    assert data.timestamps.tolist() == [30, 10, 20]
    assert data.item_titles is None


def test_generic_csv_implicit_and_line_order(tmp_path):
    path = _write(tmp_path / "x.csv", "user,item\n1,2\n3,4\n1,4\n")
    data = load_interactions_csv(path, rating_column=None, timestamp_column=None)
    assert data.ratings.tolist() == [1.0, 1.0, 1.0]
    assert data.timestamps.tolist() == [0, 1, 2]


# -- bad input: typed errors naming the file and the line ----------------------------

RATINGS_HEADER = "userId,movieId,rating,timestamp\n"

# (files to write, expected error type, line in the named file, fragment of the message)
BAD_MOVIELENS = {
    "empty ratings.csv": ({"ratings.csv": ""}, DataError, "ratings.csv", 1, "empty file"),
    "blank ratings.csv": ({"ratings.csv": "\n\n"}, DataError, "ratings.csv", 1, "empty file"),
    "header only": ({"ratings.csv": RATINGS_HEADER}, DataError, "ratings.csv", 2, "no data rows"),
    "missing columns": (
        {"ratings.csv": "userId,movieId,score\n1,2,3\n"},
        DataError,
        "ratings.csv",
        1,
        "lacks column(s) rating, timestamp",
    ),
    "non-numeric movieId": (
        {"ratings.csv": RATINGS_HEADER + "1,2,3.0,4\n1,abc,3.0,4\n"},
        DataError,
        "ratings.csv",
        3,
        "non-numeric movieId 'abc'",
    ),
    "non-integer userId": (
        {"ratings.csv": RATINGS_HEADER + "1.5,2,3.0,4\n"},
        DataError,
        "ratings.csv",
        2,
        "non-integer userId '1.5'",
    ),
    "empty userId": (
        {"ratings.csv": RATINGS_HEADER + "1,2,3.0,4\n,2,3.0,4\n"},
        DataError,
        "ratings.csv",
        3,
        "non-numeric userId ''",
    ),
    "id out of range": (
        {"ratings.csv": RATINGS_HEADER + "99999999999999999999,2,3.0,4\n"},
        DataError,
        "ratings.csv",
        2,
        "out of the int64 range",
    ),
    "non-numeric rating": (
        {"ratings.csv": RATINGS_HEADER + "1,2,3.0,4\n1,3,good,4\n"},
        DataError,
        "ratings.csv",
        3,
        "non-numeric rating 'good'",
    ),
    "nan rating": (
        {"ratings.csv": RATINGS_HEADER + "1,2,3.0,4\n\n1,3,nan,4\n"},
        DataError,
        "ratings.csv",
        4,
        "rating 'nan' is not finite",
    ),
    "inf rating": (
        {"ratings.csv": RATINGS_HEADER + "1,2,-inf,4\n"},
        DataError,
        "ratings.csv",
        2,
        "rating '-inf' is not finite",
    ),
    "float32 overflow": (
        {"ratings.csv": RATINGS_HEADER + "1,2,1e39,4\n"},
        DataError,
        "ratings.csv",
        2,
        "overflows float32",
    ),
    "non-numeric timestamp": (
        {"ratings.csv": RATINGS_HEADER + "1,2,3.0,2020-01-01\n"},
        DataError,
        "ratings.csv",
        2,
        "non-numeric timestamp '2020-01-01'",
    ),
    "too few fields": (
        {"ratings.csv": RATINGS_HEADER + "1,2,3.0,4\n1,2,3.0\n"},
        DataError,
        "ratings.csv",
        3,
        "expected 4 fields",
    ),
    "too many fields": (
        {"ratings.csv": RATINGS_HEADER + "1,2,3.0,4,5\n"},
        DataError,
        "ratings.csv",
        2,
        "found 5",
    ),
    "bad quoting": (
        {"ratings.csv": RATINGS_HEADER + '1,2,"3.0"x,4\n'},
        DataError,
        "ratings.csv",
        2,
        "malformed CSV",
    ),
    "not utf-8": (
        {"ratings.csv": RATINGS_HEADER.encode() + b"1,2,3.0,4\n1,\xff,3.0,4\n"},
        DataError,
        "ratings.csv",
        3,
        "not valid UTF-8",
    ),
    "movies.csv lacks a rated movie": (
        {
            "ratings.csv": RATINGS_HEADER + "1,2,3.0,4\n1,5,3.0,4\n",
            "movies.csv": "movieId,title,genres\n2,Two (2000),Drama\n",
        },
        DataError,
        "movies.csv",
        None,
        "movie id 5 is rated in ratings.csv but not listed",
    ),
    "movies.csv repeats a movie": (
        {
            "ratings.csv": RATINGS_HEADER + "1,2,3.0,4\n",
            "movies.csv": "movieId,title,genres\n2,Two (2000),Drama\n2,Again (2001),Drama\n",
        },
        DataError,
        "movies.csv",
        3,
        "listed again (first on line 2)",
    ),
    "line after a multi-line title": (
        {
            "ratings.csv": RATINGS_HEADER + "1,2,3.0,4\n",
            "movies.csv": 'movieId,title,genres\n2,"Two\nlines (2000)",Drama\nx,Three,Drama\n',
        },
        DataError,
        "movies.csv",
        4,
        "non-numeric movieId 'x'",
    ),
    "ratings.dat field count": (
        {"ratings.dat": "1::2::3::4\n1::2::3\n"},
        DataError,
        "ratings.dat",
        2,
        "expected 4 fields separated by '::', found 3",
    ),
    "ratings.dat non-numeric": (
        {"ratings.dat": "1::2::3::4\r\n\r\n1::b::3::4\r\n"},
        DataError,
        "ratings.dat",
        3,
        "non-numeric movie id 'b'",
    ),
    "movies.dat field count": (
        {"ratings.dat": "1::2::3::4\n", "movies.dat": "2::Two (2000)\n"},
        DataError,
        "movies.dat",
        1,
        "expected 3 fields",
    ),
    "u.data field count": (
        {"u.data": "1\t2\t3\t4\n1 2 3 4\n"},
        DataError,
        "u.data",
        2,
        "expected 4 fields separated by '\\t', found 1",
    ),
    "u.item field count": (
        {"u.data": "1\t2\t3\t4\n", "u.item": "2|Two (2000)|01-Jan-2000\n"},
        DataError,
        "u.item",
        1,
        "expected 24 fields",
    ),
    "u.item bad flag": (
        {"u.data": "1\t2\t3\t4\n", "u.item": "2|Two||||" + "|".join(["0"] * 18 + ["2"]) + "\n"},
        DataError,
        "u.item",
        1,
        "genre flags must be 0 or 1",
    ),
    "empty u.data": ({"u.data": ""}, DataError, "u.data", 1, "empty file"),
}


@pytest.mark.parametrize("case", sorted(BAD_MOVIELENS), ids=str)
def test_bad_movielens_input(tmp_path, case):
    files, error, named, line, fragment = BAD_MOVIELENS[case]
    for name, content in files.items():
        _write(tmp_path / name, content)
    with pytest.raises(error) as caught:
        load_movielens(tmp_path)
    message = str(caught.value)
    path = tmp_path / named
    prefix = f"{path}:{line}:" if line is not None else f"{path}:"
    assert message.startswith(prefix), message
    assert fragment in message


def test_missing_path(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'nope'}: no such directory")):
        load_movielens(tmp_path / "nope")
    with pytest.raises(ConfigError, match="no such file"):
        load_interactions_csv(tmp_path / "nope.csv")


def test_path_of_the_wrong_kind(tmp_path):
    path = _write(tmp_path / "ratings.csv", LATEST_RATINGS)
    with pytest.raises(ConfigError, match="not a directory"):
        load_movielens(path)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_interactions_csv(tmp_path)


def test_directory_without_ratings(tmp_path):
    _write(tmp_path / "movies.csv", LATEST_MOVIES)
    with pytest.raises(DataError, match=re.escape(f"{tmp_path}: no MovieLens ratings file")):
        load_movielens(tmp_path)


def test_generic_missing_columns_are_a_config_error(tmp_path):
    path = _write(tmp_path / "x.csv", "\nuser,thing\n1,2\n")
    with pytest.raises(ConfigError) as caught:
        load_interactions_csv(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:2:")
    assert "'user,thing'" in message
    assert "lacks column(s) item, rating, timestamp" in message


def test_bad_utf8_after_a_byte_order_mark(tmp_path):
    path = _write(tmp_path / "x.csv", b"\xef\xbb\xbfuser,item\n1,2\n\xff,3\n")
    with pytest.raises(DataError, match=_where(path, 3) + r" not valid UTF-8 \(byte offset 17\)"):
        load_interactions_csv(path, rating_column=None, timestamp_column=None)


def test_generic_repeated_header_column(tmp_path):
    path = _write(tmp_path / "x.csv", "user,item,user\n1,2,3\n")
    with pytest.raises(DataError, match=_where(path, 1) + ".*more than once"):
        load_interactions_csv(path, rating_column=None, timestamp_column=None)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("user,item,rating,timestamp\n1,2,3,4\n1,2,3\n", 3, "expected 4 fields"),
        ("user,item,rating,timestamp\n1,2,inf,4\n", 2, "rating 'inf' is not finite"),
        ("user,item,rating,timestamp\n1,x2,1,4\n", 2, "non-numeric item 'x2'"),
        ("user,item,rating,timestamp\n1,2,1,4.5\n", 2, "non-integer timestamp '4.5'"),
        ("", 1, "empty file"),
    ],
)
def test_bad_generic_csv(tmp_path, text, line, fragment):
    path = _write(tmp_path / "x.csv", text)
    with pytest.raises(DataError, match=_where(path, line) + ".*" + re.escape(fragment)):
        load_interactions_csv(path)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"user_column": ""},
        {"item_column": None},
        {"user_column": 3},
        {"rating_column": "user"},
        {"timestamp_column": "item"},
        {"delimiter": ""},
        {"delimiter": ",,"},
        {"delimiter": '"'},
        {"delimiter": "\n"},
    ],
)
def test_bad_generic_arguments(tmp_path, kwargs):
    path = _write(tmp_path / "x.csv", "user,item,rating,timestamp\n1,2,3,4\n")
    with pytest.raises(ConfigError):
        load_interactions_csv(path, **kwargs)


def test_nothing_is_skipped(tmp_path):
    """A bad line in the middle fails the whole load; it is never dropped."""
    lines = [f"{u},{u % 7},3.0,{u}" for u in range(1, 200)]
    lines[150] = "151,7,3.0,oops"
    path = _write(tmp_path / "x.csv", "user,item,rating,timestamp\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=_where(path, 152)):
        load_interactions_csv(path)
