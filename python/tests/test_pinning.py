"""Pinning: a session keeps answering the same while the sink lands more; the pin one
process prints reproduces its answers in another; the Python backtest equals the Rust one."""

import subprocess
import sys
import time

from conftest import REPO, land_more

EXAMPLE = REPO / "python" / "examples" / "backtest.py"


def backtest(config, exchange, *extra):
    out = subprocess.run(
        [sys.executable, EXAMPLE, "--config", config, "--symbol", "BHP", "--exchange", exchange,
         *extra],
        check=True, capture_output=True, text=True, timeout=300,
    )
    return out.stdout


def rust_backtest(config, exchange, bin_dir, as_of):
    out = subprocess.run(
        [bin_dir / "examples" / "backtest", "--config", config, "--symbol", "BHP",
         "--exchange", exchange, "--as-of", as_of],
        check=True, capture_output=True, text=True, timeout=300,
    )
    return out.stdout


def last_line(text):
    return text.strip().splitlines()[-1]


def test_pins_hold_while_the_sink_lands_more(lake, config, exchange, asx_dir, bin_dir):
    first = backtest(config, exchange)
    as_of = next(l for l in first.splitlines() if l.startswith("as_of: "))[len("as_of: "):]
    assert "one-minute bars" in first
    # The Rust example over the same pin says the same.
    assert last_line(rust_backtest(config, exchange, bin_dir, as_of)) == last_line(first)

    pinned = lake.session()
    pin = dict(pinned.pinned)
    count = "SELECT count(*) AS n, sum(quantity) AS q FROM trades"
    before = pinned.sql(count).to_arrow()
    bars_before = pinned.ohlcv("BHP", exchange=exchange, interval="1h", start="2014-03-01",
                               end="2014-04-01").to_arrow()

    time.sleep(1.1)  # the next snapshots are committed strictly after as_of
    land_more(config, exchange, asx_dir, bin_dir)

    # The open session still reads its snapshots.
    assert pinned.sql(count).to_arrow().equals(before)
    assert pinned.ohlcv("BHP", exchange=exchange, interval="1h", start="2014-03-01",
                        end="2014-04-01").to_arrow().equals(bars_before)
    # A new session at the latest snapshots sees twice the records.
    with lake.session() as latest:
        assert latest.pinned["trades"] != pin["trades"]
        assert latest.sql(count).to_arrow()["n"][0].as_py() == 2 * before["n"][0].as_py()
    # The printed pin, in another process, answers as this one did.
    script = (
        "import sys, k2, pyarrow as pa\n"
        f"s = k2.Lakehouse.open({config!r}).session(snapshots={pin!r})\n"
        f"sys.stdout.buffer.write(pa.table(s.sql({count!r})).to_pandas().to_json().encode())\n"
    )
    other = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                           text=True).stdout
    assert other == before.to_pandas().to_json()
    # And the example re-run with its printed as_of prints exactly the same.
    assert backtest(config, exchange, "--as-of", as_of) == first
    pinned.close()
