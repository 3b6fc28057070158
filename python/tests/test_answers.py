"""Same answers as the Rust library and as pandas alone, with exact decimals."""

import datetime
import subprocess
from decimal import Decimal

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import k2
from conftest import raw_trades

WEEK = ("2014-03-01T00:00:00Z", "2014-04-01T00:00:00Z")
BAR_COLUMNS = ["symbol", "bucket_start", "open", "high", "low", "close", "volume", "vwap", "trades"]


def expected_bars(trades: pd.DataFrame, width: str, local: bool) -> pd.DataFrame:
    """OHLCV computed with pandas from the raw CSV: open/close by (time, file order)."""
    t = trades.sort_values(["time", "seq"], kind="stable")
    if local:
        start = t["local"].dt.floor(width).dt.tz_localize("Australia/Sydney").dt.tz_convert("UTC")
    else:
        start = t["time"].dt.floor(width)
    t = t.assign(bucket_start=start, notional=t["price"] * t["volume"])
    g = t.groupby("bucket_start", sort=True)
    out = pd.DataFrame({
        "open": g["price"].first(),
        "high": g["price"].max(),
        "low": g["price"].min(),
        "close": g["price"].last(),
        "volume": g["volume"].sum(),
        "notional": g["notional"].sum(),
        "trades": g.size(),
    })
    return out


@pytest.mark.parametrize("interval,width", [("1m", "1min"), ("1h", "1h"), ("1d", "1D")])
@pytest.mark.parametrize("tz", ["utc", "exchange"])
def test_ohlcv_matches_pandas_on_the_raw_trades(session, exchange, asx_dir, interval, width, tz):
    got = session.ohlcv("BHP", exchange=exchange, interval=interval, start=WEEK[0],
                        end=WEEK[1], tz=tz).to_pandas()
    want = expected_bars(raw_trades(asx_dir, "BHP"), width, local=(tz == "exchange"))
    assert list(got.columns) == BAR_COLUMNS
    assert len(got) == len(want)
    got = got.set_index("bucket_start")
    assert list(got.index) == list(want.index)
    for col in ["open", "high", "low", "close", "volume"]:
        # Exact: Decimal against Decimal, no float anywhere.
        assert [Decimal(str(v)) for v in got[col]] == list(want[col]), col
    assert list(got["trades"]) == list(want["trades"])
    vwap = [Decimal(str(v)) for v in got["vwap"]]
    exact = [n / v for n, v in zip(want["notional"], want["volume"])]
    assert all(abs(a - b) <= Decimal("1e-8") for a, b in zip(vwap, exact))


def test_same_bars_as_the_rust_shell(session, config, exchange, bin_dir, first_pin):
    pins = [a for t, i in first_pin.items() if i is not None for a in ("--snapshot", f"{t}={i}")]
    shell = subprocess.run(
        [bin_dir / "k2-query", "--config", config, *pins, "--format", "csv",
         "-c", f".ohlcv BHP 15m 2014-03-11 2014-03-13 --exchange {exchange} --tz exchange"],
        check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()
    rows = session.ohlcv("BHP", exchange=exchange, interval="15m", start="2014-03-11",
                         end="2014-03-13", tz="exchange").to_arrow().to_pylist()
    assert shell[0].split(",") == BAR_COLUMNS[1:]
    assert len(shell) - 1 == len(rows) > 0
    for line, row in zip(shell[1:], rows):
        cells = line.split(",")
        assert pd.Timestamp(cells[0]) == pd.Timestamp(row["bucket_start"])
        for cell, col in zip(cells[1:7], BAR_COLUMNS[2:8]):
            assert Decimal(cell) == row[col], col
        assert int(cells[7]) == row["trades"]


def test_fill_forward_carries_the_close(session, exchange, asx_dir):
    # Midday in Sydney (AEDT, UTC+11): every minute from BHP's first trade in the half
    # hour on, filled or not.
    start, end = pd.Timestamp("2014-03-11T01:00:00Z"), pd.Timestamp("2014-03-11T01:30:00Z")
    raw = raw_trades(asx_dir, "BHP")
    raw = raw[(raw["time"] >= start) & (raw["time"] < end)]
    first = raw["time"].min().floor("1min")
    bars = session.ohlcv(["BHP"], exchange=exchange, interval="1m", start=start.isoformat(),
                         end=end.isoformat(), fill="forward").to_pandas()
    assert len(bars) == (end - first) // pd.Timedelta("1min")
    assert (bars["trades"] > 0).sum() == raw["time"].dt.floor("1min").nunique()
    bars = session.ohlcv(["MWR"], exchange=exchange, interval="1h", start=WEEK[0],
                         end="2014-03-15T00:00:00Z", fill="forward").to_pandas()
    empty = bars[bars["trades"] == 0]
    assert len(empty) > 0
    assert (empty["volume"] == 0).all() and empty["vwap"].isna().all()
    prev_close = bars["close"].shift(1)
    assert (empty["open"] == prev_close[empty.index]).all()


def test_types_cross_exactly(session, exchange):
    res = session.ohlcv(["BHP", "DVN"], exchange=exchange, interval="1d", start=WEEK[0],
                        end=WEEK[1], tz="exchange")
    table = res.to_arrow()
    assert table.schema.field("open").type == pa.decimal128(18, 8)
    assert table.schema.field("bucket_start").type == pa.timestamp("us", tz="UTC")
    assert set(table.column("symbol").to_pylist()) == {"BHP", "DVN"}
    df = res.to_pandas()
    assert isinstance(df["open"].dtype, pd.ArrowDtype)
    assert str(df["bucket_start"].dtype) == "datetime64[us, UTC]"
    plf = res.to_polars()
    assert plf.schema["open"] == pl.Decimal(18, 8)
    assert plf.schema["bucket_start"] == pl.Datetime("us", "UTC")
    # The same buffers: pyarrow imports the stream without copying.
    assert table.nbytes <= res.nbytes
    assert pa.table(res).equals(table) and len(res) == table.num_rows
    reader = res.to_reader()
    assert sum(b.num_rows for b in reader) == res.num_rows


def test_sql_binds_parameters(session, exchange, asx_dir):
    trades = raw_trades(asx_dir, "BHP")
    day = trades[trades["time"].dt.date == datetime.date(2014, 3, 12)]
    above = sorted(day["price"])[len(day) // 2]  # the day's median price: half the trades
    res = session.sql(
        "SELECT count(*) AS n, sum(quantity) AS q FROM trades WHERE exchange = ? AND symbol = ?"
        " AND exchange_timestamp >= ? AND exchange_timestamp < ? AND price > ?",
        [exchange, "BHP", datetime.datetime(2014, 3, 12, tzinfo=datetime.timezone.utc),
         datetime.date(2014, 3, 13), above],
    ).to_arrow().to_pylist()[0]
    want = day[day["price"] > above]
    assert res["n"] == len(want) > 0
    assert res["q"] == sum(want["volume"])


def test_an_empty_answer_keeps_its_columns(session, exchange):
    res = session.sql("SELECT symbol, price FROM trades WHERE false")
    assert res.num_rows == 0 and res.column_names == ["symbol", "price"]
    bars = session.ohlcv("BHP", exchange=exchange, interval="1m", start="2001-01-01",
                         end="2001-01-02")
    assert bars.num_rows == 0 and bars.column_names == BAR_COLUMNS
    assert list(bars.to_pandas().columns) == BAR_COLUMNS


def test_other_questions(session, exchange, asx_dir):
    start, end = "2014-03-12T00:00:00Z", "2014-03-13T00:00:00Z"
    trades = session.trades(["BHP", "DVN"], exchange, start, end).to_pandas()
    raw = raw_trades(asx_dir, "BHP")
    raw = raw[(raw["time"] >= pd.Timestamp(start)) & (raw["time"] < pd.Timestamp(end))]
    assert (trades["symbol"] == "BHP").sum() == len(raw)
    joined = session.trades_with_quotes("BHP", exchange, start, end).to_pandas()
    assert len(joined) == len(raw) and "mid" in joined.columns
    assert session.quotes("BHP", exchange, start, end).num_rows > 0
    assert session.spread_stats("BHP", exchange, start, end).column_names[0] == "symbol"
    daily = session.daily_summary("BHP", exchange, "2014-03-01", "2014-04-01")
    assert daily.num_rows == 5  # five trading days


def test_lakehouse_introspection(lake, first_pin):
    assert "trades" in lake.tables()
    history = lake.snapshots("trades")
    assert history[0]["snapshot_id"] and isinstance(history[0]["committed_at"], datetime.datetime)
    assert first_pin["trades"] in [h["snapshot_id"] for h in history]
    assert "main" in history[-1]["refs"], "the refs pointing at each snapshot"
    assert "k2.Lakehouse" in repr(lake) and k2.__version__


def test_ohlcv_answers_from_bars_where_built(session, exchange):
    """tests/python.rs compacted every day and built its bars: whole days come from them."""
    for interval in ("1m", "15m", "1d"):
        src = session.ohlcv_sources("BHP", exchange=exchange, interval=interval, start=WEEK[0],
                                    end=WEEK[1])
        assert src["trades"] == [], (interval, src)
        assert len(src["bars_1m"]) >= 5 and all(isinstance(d, datetime.date) for d in src["bars_1m"])
    # Seconds are not minutes: the trades answer.
    src = session.ohlcv_sources("BHP", exchange=exchange, interval="30s", start=WEEK[0], end=WEEK[1])
    assert src["bars_1m"] == [] and len(src["trades"]) >= 5, src


def test_session_bars_match_pandas_on_the_session_trades(session, exchange, asx_dir):
    """session="regular": one bar per trading day from the 10:00 open, only trades between
    10:00 and 16:00 Sydney time; "extended" keeps the day's others."""
    raw = raw_trades(asx_dir, "BHP")
    inside = raw[(raw["local"].dt.hour >= 10) & (raw["local"].dt.hour < 16)]
    for choice, trades in (("regular", inside), ("extended", raw)):
        got = session.ohlcv("BHP", exchange=exchange, interval="1d", start=WEEK[0], end=WEEK[1],
                            session=choice).to_pandas()
        by_day = trades.groupby(trades["local"].dt.date)
        assert list(got["trades"]) == list(by_day.size()), choice
        assert [Decimal(str(v)) for v in got["volume"]] == list(by_day["volume"].sum()), choice
        opens = [pd.Timestamp(d).replace(hour=10).tz_localize("Australia/Sydney").tz_convert("UTC")
                 for d in by_day.size().index]
        assert list(got["bucket_start"]) == opens, choice


def test_markouts_have_a_price_and_a_signed_markout_per_horizon(session, exchange):
    m = session.markouts("BHP", exchange=exchange, start="2014-03-11", end="2014-03-12",
                         horizons=["1s", "60s"]).to_pandas()
    assert len(m) > 0
    assert {"price_1s", "markout_1s", "price_60s", "markout_60s"} <= set(m.columns)
    # The ASX sample does not say which side initiated a trade: a price at every horizon
    # (the day's trades go on), no markout (tests/query.rs checks signed ones).
    assert m["price_60s"].notna().all()
    assert m["markout_60s"].isna().all() and set(m["side"].dropna()) <= {"UNKNOWN"}
    with pytest.raises(k2.QueryError, match="horizon"):
        session.markouts("BHP", exchange=exchange, start="2014-03-11", end="2014-03-12",
                         horizons=["0s"])


def test_the_bars_table_is_a_view_like_the_others(session):
    trades = session.sql("SELECT count(*) AS n FROM trades").to_pandas()["n"][0]
    in_bars = session.sql("SELECT CAST(sum(trades) AS BIGINT) AS n FROM bars_1m").to_pandas()["n"][0]
    assert in_bars == trades
