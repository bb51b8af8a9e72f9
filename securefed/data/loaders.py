"""Load interaction data: MovieLens in its published layouts, or a generic CSV.

Pure NumPy and the standard ``csv`` module. Every file is read whole and checked
whole: a malformed line is an error that names the file and the line
(``"ratings.csv:17: non-numeric movieId 'abc'"``), never a line silently skipped.
Blank lines carry no data and are ignored.

Errors: :class:`~securefed.errors.ConfigError` for bad arguments (a path that
does not exist, a column the caller asked for that the file lacks, a bad
delimiter); :class:`~securefed.errors.DataError` for bad file contents.

Dense indices follow ascending original id, so loading the same file twice
gives the same index.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from securefed.data.interactions import Interactions
from securefed.errors import ConfigError, DataError

if TYPE_CHECKING:
    from _csv import Reader as _CsvReader

__all__ = ["MOVIELENS_100K_GENRES", "load_interactions_csv", "load_movielens"]

PathLike = str | os.PathLike[str]

MOVIELENS_100K_GENRES: tuple[str, ...] = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
"""The 19 genre flag columns of ML-100K ``u.item``, in column order (``u.genre``)."""

# Markers for "no genre" in the published files. They load as an empty tuple so
# that every layout says "no genre" the same way.
_NO_GENRE_MARKERS = frozenset({"(no genres listed)", "unknown"})

_INT64_MIN = int(np.iinfo(np.int64).min)
_INT64_MAX = int(np.iinfo(np.int64).max)


# -- reading -------------------------------------------------------------------------


class _Records:
    """The data rows of one file; the line each row starts on is found only when needed.

    Finding line numbers costs a second pass over the file, so it happens only
    when an error has to name a line (the fast path never pays for it).
    """

    __slots__ = ("_lines", "_locate", "path", "rows")

    def __init__(self, path: Path, rows: list[list[str]], locate: Callable[[], list[int]]) -> None:
        self.path = path
        self.rows = rows
        self._locate = locate
        self._lines: list[int] | None = None

    def column(self, index: int) -> list[str]:
        return [row[index] for row in self.rows]

    def line(self, row: int) -> int:
        """The 1-based line on which data row ``row`` starts."""
        if self._lines is None:
            self._lines = self._locate()
        return self._lines[row]


def _existing(path: PathLike, *, directory: bool) -> Path:
    try:
        p = Path(path)
    except TypeError:
        raise ConfigError(f"not a path: {path!r}") from None
    if not p.exists():
        raise ConfigError(f"{p}: no such {'directory' if directory else 'file'}")
    if directory and not p.is_dir():
        raise ConfigError(f"{p}: not a directory (pass the folder that holds the files)")
    if not directory and not p.is_file():
        raise ConfigError(f"{p}: not a regular file")
    return p


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from exc


def _decode_utf8(path: Path, raw: bytes) -> str:
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = bom + exc.start
        line = raw.count(b"\n", 0, offset) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte offset {offset})") from None


def _decode_legacy(raw: bytes) -> str:
    """UTF-8 when the bytes are valid UTF-8, else latin-1 (ML-100K and ML-1M titles).

    Latin-1 text with accents is almost never valid UTF-8, so the test is safe.
    """
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _require_text(path: Path, text: str) -> None:
    if not text.strip():
        raise DataError(f"{path}:1: empty file")


def _csv_reader(text: str, delimiter: str) -> _CsvReader:
    # strict: a stray quote is an error rather than a guess.
    return csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)


def _csv_row_lines(text: str, delimiter: str) -> list[int]:
    """Start line of every non-blank CSV record (a quoted field may span lines)."""
    reader = _csv_reader(text, delimiter)
    lines = []
    end = 0
    for row in reader:
        start, end = end + 1, reader.line_num
        if row:
            lines.append(start)
    return lines


def _read_csv(path: Path, *, delimiter: str = ",") -> tuple[list[str], int, _Records]:
    """Read a CSV with a header; every data row must have as many fields as the header.

    Returns:
        The header (names stripped of spaces), the line it is on, and the data rows.
    """
    text = _decode_utf8(path, _read_bytes(path))
    _require_text(path, text)
    reader = _csv_reader(text, delimiter)
    try:
        raw = list(reader)
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
    # Records before the header are blank lines, one physical line each.
    header_at = next(i for i, row in enumerate(raw) if row)
    header_line = header_at + 1
    header = [name.strip() for name in raw[header_at]]
    rows = raw[header_at + 1 :]
    if not all(rows):
        rows = [row for row in rows if row]
    records = _Records(path, rows, lambda: _csv_row_lines(text, delimiter)[1:])
    if not rows:
        raise DataError(
            f"{path}:{header_line + 1}: no data rows after the header on line {header_line}"
        )
    width = len(header)
    if set(map(len, rows)) != {width}:
        bad = next(i for i, row in enumerate(rows) if len(row) != width)
        raise DataError(
            f"{path}:{records.line(bad)}: expected {width} fields (as in the header on line "
            f"{header_line}), found {len(rows[bad])}"
        )
    return header, header_line, records


def _separated_lines(text: str) -> Iterable[tuple[int, str]]:
    """(line number, line) for every non-blank line, without its line ending."""
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line:
            yield number, line


def _read_separated(path: Path, text: str, separator: str, width: int) -> _Records:
    """Rows of a header-less file whose fields are separated by ``separator``."""
    _require_text(path, text)
    rows = [line.split(separator) for _, line in _separated_lines(text)]
    records = _Records(path, rows, lambda: [number for number, _ in _separated_lines(text)])
    if set(map(len, rows)) != {width}:
        bad = next(i for i, row in enumerate(rows) if len(row) != width)
        raise DataError(
            f"{path}:{records.line(bad)}: expected {width} fields separated by "
            f"{separator!r}, found {len(rows[bad])}"
        )
    return records


def _columns(
    path: Path,
    header: Sequence[str],
    header_line: int,
    wanted: Sequence[str],
    *,
    error: type[ConfigError] | type[DataError],
) -> dict[str, int]:
    """Positions of the ``wanted`` names in ``header`` (``error`` names the missing ones)."""
    missing = [name for name in wanted if name not in header]
    if missing:
        raise error(
            f"{path}:{header_line}: header {','.join(header)!r} lacks column(s) "
            f"{', '.join(missing)}"
        )
    repeated = [name for name in wanted if header.count(name) > 1]
    if repeated:
        raise DataError(
            f"{path}:{header_line}: column(s) {', '.join(repeated)} appear more than once"
        )
    return {name: header.index(name) for name in wanted}


# -- parsing fields ------------------------------------------------------------------


def _ints(records: _Records, index: int, what: str) -> npt.NDArray[np.int64]:
    """Column ``index`` as int64 (Python ``int()`` syntax); the first bad field is named."""
    values = records.column(index)
    try:
        return np.fromiter(map(int, values), dtype=np.int64, count=len(values))
    except (ValueError, OverflowError):
        pass
    for row, value in enumerate(values):
        try:
            number = int(value)
        except ValueError:
            try:
                float(value)
            except ValueError:
                raise DataError(
                    f"{records.path}:{records.line(row)}: non-numeric {what} {value!r}"
                ) from None
            raise DataError(
                f"{records.path}:{records.line(row)}: non-integer {what} {value!r}"
            ) from None
        if not _INT64_MIN <= number <= _INT64_MAX:
            raise DataError(
                f"{records.path}:{records.line(row)}: {what} {value!r} is out of the int64 range"
            )
    raise AssertionError("unreachable: every field parsed")  # pragma: no cover


def _floats(records: _Records, index: int, what: str) -> npt.NDArray[np.float32]:
    """Column ``index`` as finite float32; NaN, inf and float32 overflow are errors."""
    values = records.column(index)
    try:
        wide = np.fromiter(map(float, values), dtype=np.float64, count=len(values))
    except ValueError:
        for row, value in enumerate(values):
            try:
                float(value)
            except ValueError:
                raise DataError(
                    f"{records.path}:{records.line(row)}: non-numeric {what} {value!r}"
                ) from None
        raise AssertionError("unreachable: every field parsed") from None  # pragma: no cover
    with np.errstate(over="ignore"):
        narrow = wide.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(narrow))
    if bad.size:
        i = int(bad[0])
        reason = "is not finite" if not np.isfinite(wide[i]) else "overflows float32"
        raise DataError(f"{records.path}:{records.line(i)}: {what} {values[i]!r} {reason}")
    return narrow


def _genres(field: str) -> tuple[str, ...]:
    names = tuple(name for name in field.split("|") if name)
    return () if len(names) == 1 and names[0] in _NO_GENRE_MARKERS else names


# -- assembling ----------------------------------------------------------------------

_Catalogue = dict[int, tuple[str, tuple[str, ...]]]
"""Movie id -> (title, genres)."""


def _catalogue(
    records: _Records, ids: npt.NDArray[np.int64], titles: list[str], genres: list[tuple[str, ...]]
) -> _Catalogue:
    out: _Catalogue = dict(zip(ids.tolist(), zip(titles, genres, strict=True), strict=True))
    if len(out) != len(titles):
        first: dict[int, int] = {}
        for row, movie_id in enumerate(ids.tolist()):
            if movie_id in first:
                raise DataError(
                    f"{records.path}:{records.line(row)}: movie id {movie_id} is listed again "
                    f"(first on line {records.line(first[movie_id])})"
                )
            first[movie_id] = row
    return out


def _assemble(
    *,
    users: npt.NDArray[np.int64],
    items: npt.NDArray[np.int64],
    ratings: npt.NDArray[np.float32],
    timestamps: npt.NDArray[np.int64],
    source: str,
    catalogue: _Catalogue | None = None,
    catalogue_path: Path | None = None,
    ratings_path: Path | None = None,
    listed: bool = False,
) -> Interactions:
    """Densify ids (ascending original id) and attach titles and genres.

    ``listed``: the items are every movie of the catalogue, rated or not, instead of
    the movies that occur in the ratings.
    """
    user_ids, user_index = np.unique(users, return_inverse=True)
    if listed:
        if catalogue is None:
            raise DataError(
                f"{catalogue_path}: items = 'listed' needs this movies file, and it is missing"
            )
        item_ids = np.array(sorted(catalogue), dtype=np.int64)
        item_index = np.searchsorted(item_ids, items)
        found = item_ids[np.minimum(item_index, item_ids.size - 1)] == items
        if not found.all():
            rated_in = ratings_path.name if ratings_path is not None else "the ratings"
            movie_id = int(items[np.flatnonzero(~found)].min())
            raise DataError(
                f"{catalogue_path}: movie id {movie_id} is rated in {rated_in} but not listed here"
            )
    else:
        item_ids, item_index = np.unique(items, return_inverse=True)
    titles: tuple[str, ...] | None = None
    genres: tuple[tuple[str, ...], ...] | None = None
    if catalogue is not None:
        entries = []
        for movie_id in item_ids.tolist():
            entry = catalogue.get(movie_id)
            if entry is None:
                rated_in = ratings_path.name if ratings_path is not None else "the ratings"
                raise DataError(
                    f"{catalogue_path}: movie id {movie_id} is rated in {rated_in} "
                    "but not listed here"
                )
            entries.append(entry)
        titles = tuple(title for title, _ in entries)
        genres = tuple(genre for _, genre in entries)
    return Interactions(
        users=user_index.reshape(-1).astype(np.int64, copy=False),
        items=item_index.reshape(-1).astype(np.int64, copy=False),
        ratings=ratings,
        timestamps=timestamps,
        user_ids=user_ids.astype(np.int64, copy=False),
        item_ids=item_ids.astype(np.int64, copy=False),
        n_users=int(user_ids.shape[0]),
        n_items=int(item_ids.shape[0]),
        item_titles=titles,
        item_genres=genres,
        source=source,
    )


# -- MovieLens -----------------------------------------------------------------------


def load_movielens(path: PathLike, *, items: str = "rated") -> Interactions:
    """Load a MovieLens folder, detecting its layout from the files present.

    Layouts, tried in this order:

    - ``ratings.csv`` (ml-latest, ml-latest-small, ML-20M, ML-25M): a header
      ``userId,movieId,rating,timestamp``; ``movies.csv`` (``movieId,title,genres``,
      UTF-8, titles quoted when they hold commas, genres ``A|B``) is optional.
    - ``ratings.dat`` (ML-1M, ML-10M): ``user::movie::rating::timestamp``;
      ``movies.dat`` (``id::title::genres``, latin-1) is optional.
    - ``u.data`` (ML-100K): tab-separated ``user item rating timestamp``; ``u.item``
      (``|``-separated, latin-1, 19 genre flags in :data:`MOVIELENS_100K_GENRES`
      order) is optional.

    The items are those that occur in the ratings (``items="rated"``) or every movie
    the movies file lists (``items="listed"``: the published catalogue, so the item
    set does not depend on who rated what), densely indexed by ascending movie id;
    titles and genres are attached when the movies file is there (every rated movie
    must be listed in it). "No genre" markers
    (``(no genres listed)``, the ML-100K ``unknown`` flag) load as ``()``.

    Args:
        path: the folder (for example ``examples/data/ml-latest-small``).
        items: ``"rated"`` or ``"listed"`` (needs the movies file).

    Returns:
        The ratings in file order.

    Raises:
        ConfigError: ``path`` does not exist or is not a folder.
        DataError: no known ratings file, or a file is malformed (the message
            names the file and the line).
    """
    if items not in ("rated", "listed"):
        raise ConfigError(f"items must be 'rated' or 'listed', not {items!r}")
    root = _existing(path, directory=True)
    listed = items == "listed"
    if (root / "ratings.csv").is_file():
        return _load_movielens_csv(root, listed)
    if (root / "ratings.dat").is_file():
        return _load_movielens_dat(root, listed)
    if (root / "u.data").is_file():
        return _load_movielens_100k(root, listed)
    raise DataError(
        f"{root}: no MovieLens ratings file (looked for ratings.csv, ratings.dat, u.data)"
    )


def _load_movielens_csv(root: Path, listed: bool) -> Interactions:
    ratings_path = root / "ratings.csv"
    header, header_line, records = _read_csv(ratings_path)
    col = _columns(
        ratings_path,
        header,
        header_line,
        ("userId", "movieId", "rating", "timestamp"),
        error=DataError,
    )
    users = _ints(records, col["userId"], "userId")
    items = _ints(records, col["movieId"], "movieId")
    ratings = _floats(records, col["rating"], "rating")
    timestamps = _ints(records, col["timestamp"], "timestamp")
    del records
    catalogue = None
    movies_path = root / "movies.csv"
    if movies_path.is_file():
        m_header, m_line, movies = _read_csv(movies_path)
        m_col = _columns(
            movies_path, m_header, m_line, ("movieId", "title", "genres"), error=DataError
        )
        catalogue = _catalogue(
            movies,
            _ints(movies, m_col["movieId"], "movieId"),
            movies.column(m_col["title"]),
            [_genres(g) for g in movies.column(m_col["genres"])],
        )
    return _assemble(
        users=users,
        items=items,
        ratings=ratings,
        timestamps=timestamps,
        source=f"movielens-csv:{root.name}",
        listed=listed,
        catalogue=catalogue,
        catalogue_path=movies_path,
        ratings_path=ratings_path,
    )


def _load_movielens_dat(root: Path, listed: bool) -> Interactions:
    ratings_path = root / "ratings.dat"
    records = _read_separated(
        ratings_path, _decode_legacy(_read_bytes(ratings_path)), "::", width=4
    )
    users = _ints(records, 0, "user id")
    items = _ints(records, 1, "movie id")
    ratings = _floats(records, 2, "rating")
    timestamps = _ints(records, 3, "timestamp")
    catalogue = None
    movies_path = root / "movies.dat"
    if movies_path.is_file():
        movies = _read_separated(
            movies_path, _decode_legacy(_read_bytes(movies_path)), "::", width=3
        )
        catalogue = _catalogue(
            movies,
            _ints(movies, 0, "movie id"),
            movies.column(1),
            [_genres(g) for g in movies.column(2)],
        )
    return _assemble(
        users=users,
        items=items,
        ratings=ratings,
        timestamps=timestamps,
        source=f"movielens-dat:{root.name}",
        listed=listed,
        catalogue=catalogue,
        catalogue_path=movies_path,
        ratings_path=ratings_path,
    )


def _load_movielens_100k(root: Path, listed: bool) -> Interactions:
    ratings_path = root / "u.data"
    records = _read_separated(ratings_path, _decode_legacy(_read_bytes(ratings_path)), "\t", 4)
    users = _ints(records, 0, "user id")
    items = _ints(records, 1, "item id")
    ratings = _floats(records, 2, "rating")
    timestamps = _ints(records, 3, "timestamp")
    catalogue = None
    items_path = root / "u.item"
    if items_path.is_file():
        n_flags = len(MOVIELENS_100K_GENRES)
        movies = _read_separated(
            items_path, _decode_legacy(_read_bytes(items_path)), "|", width=5 + n_flags
        )
        genres = []
        for i, row in enumerate(movies.rows):
            flags = row[5:]
            if any(flag not in ("0", "1") for flag in flags):
                raise DataError(f"{items_path}:{movies.line(i)}: genre flags must be 0 or 1")
            genres.append(
                tuple(
                    name
                    for name, flag in zip(MOVIELENS_100K_GENRES, flags, strict=True)
                    if flag == "1" and name not in _NO_GENRE_MARKERS
                )
            )
        catalogue = _catalogue(movies, _ints(movies, 0, "item id"), movies.column(1), genres)
    return _assemble(
        users=users,
        items=items,
        ratings=ratings,
        timestamps=timestamps,
        source=f"movielens-100k:{root.name}",
        listed=listed,
        catalogue=catalogue,
        catalogue_path=items_path,
        ratings_path=ratings_path,
    )


# -- generic CSV ---------------------------------------------------------------------


def load_interactions_csv(
    path: PathLike,
    *,
    user_column: str = "user",
    item_column: str = "item",
    rating_column: str | None = "rating",
    timestamp_column: str | None = "timestamp",
    delimiter: str = ",",
) -> Interactions:
    """Load interactions from a UTF-8 CSV file with a header line.

    User and item ids must be integers (any int64); other columns are ignored.

    Args:
        path: the file.
        user_column: header name of the user id column.
        item_column: header name of the item id column.
        rating_column: header name of the rating column, or ``None`` for implicit
            data (every rating 1.0).
        timestamp_column: header name of an integer timestamp column, or ``None``:
            the timestamps are then the data rows' order (0, 1, 2, ...).
        delimiter: one character.

    Returns:
        The interactions in file order; users and items densely indexed by
        ascending id; no titles or genres.

    Raises:
        ConfigError: bad arguments: ``path`` is not an existing file, a column
            name is empty or repeated, the delimiter is not one plain character,
            or the header lacks a column asked for (the message names the header
            line and the missing names).
        DataError: the file is malformed (the message names the file and line).
    """
    wanted = [user_column, item_column]
    for name, optional in (
        (user_column, False),
        (item_column, False),
        (rating_column, True),
        (timestamp_column, True),
    ):
        if name is None and optional:
            continue
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"column names must be non-empty strings, got {name!r}")
    wanted += [name for name in (rating_column, timestamp_column) if name is not None]
    if len(set(wanted)) != len(wanted):
        raise ConfigError(f"each column may serve one purpose only, got {wanted}")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n':
        raise ConfigError(f"delimiter must be one character other than a quote, got {delimiter!r}")
    file = _existing(path, directory=False)
    header, header_line, records = _read_csv(file, delimiter=delimiter)
    col = _columns(file, header, header_line, wanted, error=ConfigError)
    n = len(records.rows)
    users = _ints(records, col[user_column], user_column)
    items = _ints(records, col[item_column], item_column)
    ratings = (
        _floats(records, col[rating_column], rating_column)
        if rating_column is not None
        else np.ones(n, dtype=np.float32)
    )
    timestamps = (
        _ints(records, col[timestamp_column], timestamp_column)
        if timestamp_column is not None
        else np.arange(n, dtype=np.int64)
    )
    return _assemble(
        users=users,
        items=items,
        ratings=ratings,
        timestamps=timestamps,
        source=f"csv:{file.name}",
    )
