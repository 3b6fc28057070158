"""Fixtures for K2's Python tests.

tests/python.rs runs this suite (through scripts/test) against a lakehouse it built for
real: the ASX sample replayed into a real broker and landed by k2-sink. It passes the
environment in K2_TEST_* variables; without them the suite fails at once rather than
skipping (run it with `cargo test --test python`).
"""

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

import k2

REPO = Path(__file__).resolve().parents[2]
SYDNEY = "Australia/Sydney"
ASX_IDS = {"BHP": "7078", "DVN": "7181", "MWR": "3153"}


def _need(var: str) -> str:
    value = os.environ.get(var)
    if not value:
        pytest.fail(
            f"{var} is not set: these tests run inside `cargo test --test python` "
            "(tests/python.rs), which lands the data they read",
            pytrace=False,
        )
    return value


@pytest.fixture(scope="session")
def config() -> str:
    return _need("K2_TEST_CONFIG")


@pytest.fixture(scope="session")
def exchange() -> str:
    return _need("K2_TEST_EXCHANGE")


@pytest.fixture(scope="session")
def asx_dir() -> Path:
    return Path(_need("K2_ASX_DIR"))


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    return Path(_need("K2_TEST_BIN_DIR"))


@pytest.fixture(scope="session")
def lake(config) -> k2.Lakehouse:
    return k2.Lakehouse.open(config)


@pytest.fixture(scope="session")
def first_pin(lake) -> dict:
    """The snapshots as the harness left them (the ASX week landed once). Tests read at
    this pin, so a test that lands more data changes nobody else's answers."""
    with lake.session() as s:
        return dict(s.pinned)


@pytest.fixture
def session(lake, first_pin):
    with lake.session(snapshots=first_pin) as s:
        yield s


def raw_trades(asx_dir: Path, symbol: str) -> pd.DataFrame:
    """The ASX sample's trades for one symbol, read with pandas alone (not K2): exact
    Decimal prices and volumes, UTC times, the file order as the sequence."""
    df = pd.read_csv(
        asx_dir / "trades" / f"{ASX_IDS[symbol]}.csv",
        header=None,
        names=["date", "time", "price", "volume", "qualifiers", "venue", "buyer"],
        dtype=str,
        keep_default_na=False,
    )
    local = pd.to_datetime(df["date"] + " " + df["time"], format="%m/%d/%Y %H:%M:%S.%f")
    df["time"] = local.dt.tz_localize(SYDNEY).dt.tz_convert("UTC")
    df["local"] = local
    df["price"] = df["price"].map(Decimal)
    df["volume"] = df["volume"].map(Decimal)
    df["seq"] = range(len(df))
    return df[["time", "local", "price", "volume", "seq"]]


def land_more(config: str, exchange: str, asx_dir: Path, bin_dir: Path) -> None:
    """Replays the ASX week again and lands it: new Kafka offsets, new snapshots."""
    env = dict(os.environ)
    subprocess.run(
        [bin_dir / "k2-feed", "--config", config, "replay",
         "--asx-dir", str(asx_dir), "--exchange", exchange],
        check=True, env=env, capture_output=True, timeout=600,
    )
    subprocess.run(
        [bin_dir / "k2-sink", "--config", config, "--once"],
        check=True, env=env, capture_output=True, timeout=600,
    )


def python() -> str:
    return sys.executable
