"""A reproducible backtest in Python: the moving-average crossover of
query/examples/backtest.rs on 1-minute bars in pandas, pinned to an instant.

Run it, note the printed as_of, let the sink land more data, run it again with that
--as-of: the P&L is identical, because every table is read at the same snapshots.

    python python/examples/backtest.py --config config/k2.toml --symbol BHP --exchange asx
    python python/examples/backtest.py --symbol BHP --exchange asx --as-of 2026-11-23T12:00:00+00:00
"""

import argparse
import datetime

import pandas as pd

import k2


def crossover(closes: pd.Series, fast: int, slow: int) -> tuple[int, int]:
    """Long one unit while the fast mean is above the slow one. `closes` are integers in
    units of 1e-8 (exact); means truncate like the Rust example's integer division.
    Returns (position changes, P&L in units of 1e-8)."""
    fast_mean = closes.rolling(fast).sum() // fast
    slow_mean = closes.rolling(slow).sum() // slow
    t = pd.Series(range(len(closes)), index=closes.index)
    # The position decided at bar t, held over the move to t + 1.
    position = (fast_mean > slow_mean).astype("int64").where(t >= max(slow - 1, 1), 0)
    pnl = int((position.shift(1, fill_value=0) * closes.diff().fillna(0).astype("int64")).sum())
    changes = int((position.diff().fillna(position.iloc[0] if len(position) else 0) != 0).sum())
    return changes, pnl


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="config/k2.toml")
    p.add_argument("--symbol", required=True)
    p.add_argument("--exchange", required=True)
    p.add_argument("--as-of", help="the instant or tag (eod-2026-12-07) to read the lakehouse at "
                   "(default: now, printed)")
    p.add_argument("--fast", type=int, default=5)
    p.add_argument("--slow", type=int, default=20)
    args = p.parse_args()

    as_of = args.as_of or datetime.datetime.now(datetime.timezone.utc).isoformat()
    lake = k2.Lakehouse.open(args.config)
    with lake.session(as_of=as_of) as s:
        # The instant the pin stands for (for an end-of-day tag, the midnight ending it).
        bars = s.ohlcv(args.symbol, exchange=args.exchange, interval="1m",
                       start="1990-01-01T00:00:00Z", end=s.instant).to_pandas()
        pinned = s.pinned
    # Exact decimal closes as integer units of 1e-8.
    closes = pd.Series([int(c.scaleb(8)) for c in bars["close"]], dtype="int64")
    changes, pnl = crossover(closes, args.fast, args.slow)

    print(f"as_of: {as_of}")
    for table, snapshot in pinned.items():
        print(f"  {table}: snapshot {snapshot}")
    sign = "-" if pnl < 0 else ""
    print(
        f"{args.exchange} {args.symbol}: {len(closes)} one-minute bars, {changes} position "
        f"changes, P&L {sign}{abs(pnl) // 10**8}.{abs(pnl) % 10**8:08d} per unit"
    )


if __name__ == "__main__":
    main()
