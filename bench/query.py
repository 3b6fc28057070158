"""The Python half of `k2-bench query --python`: the same OHLCV questions through K2's
Python package, timed until the bars are a pandas DataFrame, and the memory a large result
costs. Reads one JSON request on stdin, prints one JSON answer on stdout:

    {"config": "...", "repeat": 5, "cases": [{"name", "symbols", "exchange", "interval",
     "start", "end"}], "big_rows": 10000000}
    → {"cases": [{"name", "rows", "warm_ms", "arrow_ms"}], "big": {...}}

Run by k2-bench (bench/src/query.rs), which times the Rust library on the same questions.
"""

import json
import resource
import statistics
import sys
import time

import k2


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def timed(f, repeat):
    runs, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs) * 1e3, out


def main() -> None:
    req = json.load(sys.stdin)
    lake = k2.Lakehouse.open(req["config"])
    answer = {"cases": []}
    with lake.session() as s:
        for case in req["cases"]:
            def ask():
                return s.ohlcv(case["symbols"], exchange=case["exchange"],
                               interval=case["interval"], start=case["start"], end=case["end"])

            ask()  # the same warm-up the Rust side gets: its first run is not timed either
            # Interleaved, so that drift (the page cache, the other core) falls on both.
            arrow, pandas = [], []
            for _ in range(req["repeat"]):
                arrow.append(timed(lambda: ask().to_arrow(), 1)[0])
                ms, df = timed(lambda: ask().to_pandas(), 1)
                pandas.append(ms)
            answer["cases"].append({"name": case["name"], "rows": len(df),
                                    "warm_ms": statistics.median(pandas),
                                    "arrow_ms": statistics.median(arrow)})
            del df

        n = req.get("big_rows")
        if n:
            base, base_peak = rss_bytes(), peak_rss_bytes()
            t = time.perf_counter()
            res = s.sql(f"SELECT * FROM trades LIMIT {int(n)}")
            query_s = time.perf_counter() - t
            after_query, peak_query = rss_bytes(), peak_rss_bytes()
            table = res.to_arrow()
            after_arrow = rss_bytes()
            t = time.perf_counter()
            df = res.to_pandas()
            pandas_s = time.perf_counter() - t
            after_pandas = rss_bytes()
            answer["big"] = {
                "rows": res.num_rows,
                "arrow_bytes": res.nbytes,
                "table_bytes": table.nbytes,
                "query_s": query_s,
                "rss_after_query": after_query - base,
                # ru_maxrss is the process's peak: it tells the query's only if it set one.
                "peak_during_query": peak_query - base if peak_query > base_peak else None,
                "rss_added_by_to_arrow": after_arrow - after_query,
                "pandas_s": pandas_s,
                "rss_added_by_to_pandas": after_pandas - after_arrow,
                "pandas_bytes": int(df.memory_usage(deep=True).sum()),
            }
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
