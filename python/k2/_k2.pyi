"""Type stubs for K2's compiled module (re-exported by `k2`)."""

import datetime
import os
from collections.abc import Sequence
from typing import Any, Callable, Literal, Mapping, Optional, Union

import pandas
import polars
import pyarrow

__version__: str

Instant = Union[datetime.datetime, datetime.date, str]
"""A datetime (naive ones are UTC), a date (its midnight UTC) or an ISO 8601 string."""
Symbols = Union[str, Sequence[str]]

class K2Error(Exception):
    """Anything K2 raises."""

class ConfigError(K2Error):
    """The configuration could not be read (the message names file, key, expectation)."""

class CatalogError(K2Error):
    """The Iceberg catalog could not be reached or answered with an error."""

class QueryError(K2Error):
    """A question K2 cannot answer as asked."""

class Result:
    """A query's answer: Arrow record batches with one schema (zero-copy to Python)."""

    @property
    def num_rows(self) -> int: ...
    @property
    def column_names(self) -> list[str]: ...
    @property
    def nbytes(self) -> int:
        """Size of the Arrow buffers in bytes."""
    def __len__(self) -> int: ...
    def __arrow_c_schema__(self) -> object: ...
    def __arrow_c_stream__(self, requested_schema: Optional[object] = None) -> object: ...
    def to_arrow(self) -> pyarrow.Table:
        """A pyarrow.Table over the same buffers."""
    def to_reader(self) -> pyarrow.RecordBatchReader: ...
    def to_pandas(
        self, types_mapper: Optional[Callable[[pyarrow.DataType], Any]] = None
    ) -> pandas.DataFrame:
        """A DataFrame; decimals stay exact (`pd.ArrowDtype(decimal128)`), timestamps UTC."""
    def to_polars(self) -> polars.DataFrame: ...

class Session:
    """A read-only view with every table pinned to one instant."""

    @property
    def pinned(self) -> dict[str, Optional[int]]:
        """Snapshot id per table (None: empty then); reproduce with snapshots=pinned."""
    @property
    def as_of(self) -> Optional[datetime.datetime]: ...
    @property
    def instant(self) -> Optional[datetime.datetime]:
        """The instant the pin stands for (an end-of-day tag: the midnight ending its day)."""
    @property
    def tag(self) -> Optional[str]:
        """The tag the session was opened at (as_of="eod-2026-12-07"), else None."""
    @property
    def tables(self) -> list[str]: ...
    def sql(self, query: str, params: Optional[Sequence[Any]] = None) -> Result: ...
    def ohlcv(
        self,
        symbols: Symbols,
        exchange: str,
        interval: str,
        start: Instant,
        end: Instant,
        tz: Literal["utc", "exchange"] = "utc",
        fill: Literal["omit", "forward"] = "omit",
        session: Literal["none", "regular", "extended"] = "none",
    ) -> Result:
        """Bars: symbol, bucket_start, open, high, low, close, volume, vwap, trades."""
    def ohlcv_sources(
        self,
        symbols: Symbols,
        exchange: str,
        interval: str,
        start: Instant,
        end: Instant,
        tz: Literal["utc", "exchange"] = "utc",
        session: Literal["none", "regular", "extended"] = "none",
    ) -> dict[str, list[datetime.date]]:
        """Which UTC days of that OHLCV question bars_1m answers and which trades do:
        {"bars_1m": [...], "trades": [...]} (the answer is the same either way)."""
    def markouts(
        self,
        symbols: Symbols,
        exchange: str,
        start: Instant,
        end: Instant,
        horizons: Sequence[str] = ("1s", "10s", "60s"),
        price: Literal["mid", "trade"] = "mid",
    ) -> Result:
        """Each trade with price_<h> (the mid, or the last trade's price, h after it) and
        markout_<h> (that price minus the trade's: + for a buy, - for a sell)."""
    def trades(self, symbols: Symbols, exchange: str, start: Instant, end: Instant) -> Result: ...
    def quotes(self, symbols: Symbols, exchange: str, start: Instant, end: Instant) -> Result: ...
    def trades_with_quotes(
        self, symbols: Symbols, exchange: str, start: Instant, end: Instant
    ) -> Result: ...
    def spread_stats(
        self, symbols: Symbols, exchange: str, start: Instant, end: Instant
    ) -> Result: ...
    def daily_summary(
        self, symbols: Symbols, exchange: str, start: Instant, end: Instant
    ) -> Result: ...
    def describe(self, table: str) -> list[tuple[str, str]]: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Session": ...
    def __exit__(self, *exc: object) -> bool: ...

class Lakehouse:
    """The Iceberg catalog and warehouse K2's sink writes."""

    @staticmethod
    def open(config: Union[str, "os.PathLike[str]", Mapping[str, Any]]) -> "Lakehouse": ...
    def session(
        self,
        as_of: Optional[Union[Instant, str]] = None,
        snapshots: Optional[Mapping[str, Optional[int]]] = None,
    ) -> Session:
        """as_of: an instant, or a tag name such as "eod-2026-12-07" (the end of that UTC
        day, which reproduces after the ordinary snapshots have expired)."""
    def tables(self) -> list[str]: ...
    def snapshots(self, table: str) -> list[dict[str, Any]]: ...
    @property
    def warehouse(self) -> str: ...
