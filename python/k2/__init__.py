"""K2 for backtests: SQL, exact-decimal OHLCV bars and time travel over K2's Iceberg
lakehouse, answered by K2's own query library (Rust, DuckDB) and handed over as Arrow.

    import k2
    lake = k2.Lakehouse.open("config/k2.toml")
    with lake.session(as_of="2026-11-23T12:00:00Z") as s:
        bars = s.ohlcv(["BHP"], exchange="asx", interval="1m",
                       start="2026-11-23", end="2026-11-24", tz="exchange")
        df = bars.to_pandas()
        print(s.pinned)        # the snapshot ids: pass them to lake.session(snapshots=...)
"""

from ._k2 import (
    CatalogError,
    ConfigError,
    K2Error,
    Lakehouse,
    QueryError,
    Result,
    Session,
    __version__,
)

__all__ = [
    "CatalogError",
    "ConfigError",
    "K2Error",
    "Lakehouse",
    "QueryError",
    "Result",
    "Session",
    "__version__",
]
