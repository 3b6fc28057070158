"""How K2's Arrow results become pandas columns by default."""

import pandas as pd
import pyarrow as pa


def exact_decimals(dtype: pa.DataType):
    """pyarrow `types_mapper`: decimal columns stay Arrow-backed `decimal128` (exact, no
    copy, no per-row `Decimal` objects); everything else gets pyarrow's default."""
    if pa.types.is_decimal(dtype):
        return pd.ArrowDtype(dtype)
    return None
