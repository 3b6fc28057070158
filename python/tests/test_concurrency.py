"""Two sessions from two Python threads at once; Ctrl-C stops a long query."""

import signal
import subprocess
import sys
import textwrap
import threading
import time

import k2


def test_two_sessions_in_two_threads(lake, first_pin, exchange):
    def bars(symbol):
        with lake.session(snapshots=first_pin) as s:
            return s.ohlcv(symbol, exchange=exchange, interval="1m", start="2014-03-01",
                           end="2014-04-01").to_arrow()

    alone = {sym: bars(sym) for sym in ["BHP", "DVN"]}
    results, errors = {}, []
    barrier = threading.Barrier(2)

    def work(sym):
        try:
            barrier.wait()
            for _ in range(3):
                got = bars(sym)
                assert got.equals(alone[sym]), sym
            results[sym] = True
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in alone]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == {"BHP": True, "DVN": True}


def test_one_session_shared_by_threads_takes_turns(session, exchange):
    want = session.sql("SELECT count(*) AS n FROM trades").to_arrow()
    out = []
    threads = [
        threading.Thread(target=lambda: out.append(session.sql("SELECT count(*) AS n FROM trades").to_arrow()))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 4 and all(o.equals(want) for o in out)


def test_the_gil_is_released_while_k2_works(config):
    # A query that never ends runs in one thread; the main thread then needs the GIL to
    # wake from its sleep and print. Held by K2, it would never get it (and the run would
    # time out); released, it prints at once. The process exits with the query running.
    script = textwrap.dedent(f"""
        import os, threading, time, k2
        s = k2.Lakehouse.open({config!r}).session()
        entered = threading.Event()
        def forever():
            entered.set()
            s.sql("SELECT count(*) FROM range(1000000000000) a(i) WHERE i % 7 = 3")
        threading.Thread(target=forever, daemon=True).start()
        entered.wait()
        time.sleep(0.5)  # the other thread enters K2 meanwhile
        print("main thread ran", flush=True)
        os._exit(0)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "main thread ran" in out.stdout, out.stdout + out.stderr


def test_ctrl_c_interrupts_a_long_query(config):
    script = textwrap.dedent(f"""
        import sys, time, k2
        lake = k2.Lakehouse.open({config!r})
        s = lake.session()
        t = time.monotonic()
        try:
            # Inside the try: a Ctrl-C that comes before the query starts is caught too.
            print("started", flush=True)
            s.sql("SELECT count(*) FROM range(1000000000000) a(i) WHERE i % 7 = 3")
            print("finished", flush=True)
        except KeyboardInterrupt:
            print(f"interrupted after {{time.monotonic() - t:.1f}}s", flush=True)
        print(s.sql("SELECT 42 AS x").to_arrow().to_pylist(), flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "interrupted after" in out and "[{'x': 42}]" in out, out + err
