"""Bad input gets a clear Python exception with K2's message, and the process goes on."""

import datetime

import pytest

import k2


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(interval="7x"), "interval \"7x\""),
        (dict(exchange="nyse"), "unknown exchange \"nyse\""),
        (dict(symbols=["NOPE"]), "unknown symbol \"NOPE\""),
        (dict(start="2014-03-12", end="2014-03-11"), "empty range"),
        (dict(tz="local"), "tz \"local\""),
        (dict(fill="backward"), "fill \"backward\""),
        (dict(start="yesterday"), "cannot read \"yesterday\" as a timestamp"),
        (dict(symbols=3), "symbols: expected a str or a list of str"),
    ],
)
def test_bad_ohlcv_requests(session, exchange, kwargs, message):
    args = dict(symbols=["BHP"], exchange=exchange, interval="1m", start="2014-03-11",
                end="2014-03-12")
    args.update(kwargs)
    with pytest.raises(k2.QueryError, match=message.replace("(", r"\(")):
        session.ohlcv(**args)
    # The session (and the process) carry on.
    assert session.sql("SELECT 1 AS one").to_arrow().to_pylist() == [{"one": 1}]


@pytest.mark.parametrize(
    "statement",
    ["DELETE FROM trades", "CREATE TABLE x AS SELECT 1", "COPY trades TO '/tmp/x.csv'",
     "INSTALL httpfs", "SET threads = 1", "ATTACH '/tmp/x.db'"],
)
def test_statements_that_write_are_refused(session, statement):
    with pytest.raises(k2.QueryError, match="read-only"):
        session.sql(statement)


def test_sql_errors(session):
    with pytest.raises(k2.QueryError, match="syntax error"):
        session.sql("SELEC 1")
    with pytest.raises(k2.QueryError, match="no_such_column"):
        session.sql("SELECT no_such_column FROM trades")
    with pytest.raises(k2.QueryError, match="parameter 1: cannot bind a object"):
        session.sql("SELECT ?", [object()])
    with pytest.raises(k2.QueryError, match="params: expected a sequence"):
        session.sql("SELECT ?", "BHP")
    assert isinstance(k2.QueryError("x"), k2.K2Error)


def test_pins_that_cannot_be(lake):
    with pytest.raises(k2.QueryError, match="no snapshot at or before"):
        lake.session(as_of="2001-01-01")
    with pytest.raises(k2.QueryError, match="has no snapshot 42"):
        lake.session(snapshots={"trades": 42})
    with pytest.raises(k2.QueryError, match="unknown table \"trade\""):
        lake.session(snapshots={"trade": 1})
    with pytest.raises(k2.QueryError, match="not both"):
        lake.session(as_of="2030-01-01", snapshots={"trades": 1})
    # A tag no table has (an end-of-day tag of a day with no data reads the day's end).
    with pytest.raises(k2.QueryError, match='has no tag "nightly"'):
        lake.session(as_of="nightly")
    with pytest.raises(k2.QueryError, match="or a tag name such as eod-"):
        lake.session(as_of="yesterday at noon")


def test_a_tag_pin_names_its_instant(lake):
    # No table has this day's tag (no day has ended in the sink's history here): each
    # reads as of the day's end, the midnight that closes it.
    with lake.session(as_of="eod-2030-01-01") as s:
        assert s.tag == "eod-2030-01-01"
        assert s.instant == datetime.datetime(2030, 1, 2, tzinfo=datetime.timezone.utc)
        assert s.as_of is None


def test_a_closed_session_says_so(lake):
    s = lake.session()
    s.close()
    with pytest.raises(k2.QueryError, match="closed"):
        s.sql("SELECT 1")


def test_configuration_errors_name_the_key(tmp_path, config):
    with pytest.raises(k2.ConfigError, match="nope.toml"):
        k2.Lakehouse.open(tmp_path / "nope.toml")
    with pytest.raises(k2.ConfigError, match="catalog"):
        k2.Lakehouse.open({"catalog": {"type": "hive"}})
    with pytest.raises(k2.ConfigError, match="expected a path to k2.toml"):
        k2.Lakehouse.open(42)
    bad = tmp_path / "k2.toml"
    bad.write_text("[kafka]\nbootstrap_servers = \"\"\n")
    with pytest.raises(k2.ConfigError, match="kafka.bootstrap_servers"):
        k2.Lakehouse.open(bad)


def test_a_dict_configuration_opens_the_same_lakehouse(config, lake):
    import tomllib

    with open(config, "rb") as f:
        settings = tomllib.load(f)
    # Relative paths in a dict resolve against the working directory: make them absolute.
    base = __import__("pathlib").Path(config).parent
    settings["state_dir"] = str(base / settings.get("state_dir", "state"))
    settings["topics_file"] = str(base / settings["topics_file"])
    other = k2.Lakehouse.open(settings)
    assert other.warehouse == lake.warehouse
    assert other.tables() == lake.tables()
