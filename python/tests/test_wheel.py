"""The built wheel installs into a clean venv and works there on its own: libduckdb is
inside it, and no pyarrow, pandas or Polars is needed to get an answer."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def test_the_wheel_works_in_a_clean_venv(tmp_path, config):
    wheel = os.environ.get("K2_TEST_WHEEL")
    if not wheel:
        pytest.fail("K2_TEST_WHEEL is not set (tests/python.rs passes the wheel scripts/bootstrap built)")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    py = venv / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", wheel], check=True)
    script = textwrap.dedent(f"""
        import k2
        lake = k2.Lakehouse.open({config!r})
        with lake.session() as s:
            r = s.sql("SELECT count(*) AS n FROM trades")
            print(r.num_rows, r.column_names, type(r.__arrow_c_stream__()).__name__)
            try:
                r.to_pandas()
            except ImportError as e:
                print("ImportError:", e)
    """)
    out = subprocess.run([py, "-c", script], check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ""}, cwd=tmp_path).stdout
    assert "1 ['n'] PyCapsule" in out, out
    assert "pip install 'k2[pandas]'" in out, out
    # Nothing outside the venv was used: the extension and its libduckdb come from the wheel.
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert any(p.name.startswith("libduckdb") for p in site.rglob("*.so*")), sorted(
        str(p) for p in site.rglob("*.so*"))
