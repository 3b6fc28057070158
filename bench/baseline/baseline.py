"""The Python baseline for bench/ingest: Kafka → Iceberg written the way the original
Python platform did it. A confluent-kafka consumer reads the trades topics from the start,
fastavro decodes each Confluent-framed value, rows accumulate as dicts, and every
COMMIT_RECORDS rows (the sink's default commit policy) PyIceberg appends them as one
snapshot to a day-partitioned table in a SQLite catalog; Kafka offsets are committed
after each append. Stops at the high watermarks seen at start; prints one summary line.

    python baseline.py --bootstrap 127.0.0.1:9092 --schema schemas/trade.avsc \
        --dir /tmp/baseline --topics market.equities.trades.asx ...
"""

import argparse
import io
import json
import os
import resource
import struct
import time
from datetime import timezone

import fastavro
import pyarrow as pa
from confluent_kafka import Consumer, TopicPartition
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import (
    DecimalType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

COMMIT_RECORDS = 500_000


def table_schema():
    f = NestedField
    return Schema(
        f(1, "symbol", StringType(), required=True),
        f(2, "company_id", LongType()),
        f(3, "exchange", StringType(), required=True),
        f(4, "asset_class", StringType(), required=True),
        f(5, "exchange_timestamp", TimestamptzType(), required=True),
        f(6, "price", DecimalType(18, 8), required=True),
        f(7, "quantity", DecimalType(28, 8), required=True),
        f(8, "side", StringType()),
        f(9, "qualifiers", StringType()),
        f(10, "venue", StringType()),
        f(11, "sequence_number", LongType(), required=True),
        f(12, "ingestion_timestamp", TimestamptzType(), required=True),
        f(13, "isin", StringType()),
        f(14, "contract_type", StringType()),
        f(15, "settlement_currency", StringType()),
        f(16, "funding_rate", DecimalType(18, 8)),
        f(17, "kafka_topic", StringType(), required=True),
        f(18, "kafka_partition", IntegerType(), required=True),
        f(19, "kafka_offset", LongType(), required=True),
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--schema", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--topics", nargs="+", required=True)
    args = ap.parse_args()

    os.makedirs(f"{args.dir}/warehouse", exist_ok=True)
    catalog = SqlCatalog(
        "baseline",
        uri=f"sqlite:///{args.dir}/catalog.db",
        warehouse=f"file://{args.dir}/warehouse",
    )
    catalog.create_namespace_if_not_exists("market_data")
    schema = table_schema()
    spec = PartitionSpec(
        PartitionField(5, 1000, DayTransform(), "exchange_timestamp_day"),
        PartitionField(3, 1001, IdentityTransform(), "exchange"),
    )
    table = catalog.create_table_if_not_exists("market_data.trades", schema, partition_spec=spec)
    arrow_schema = schema.as_arrow()

    writer_schema = fastavro.parse_schema(json.load(open(args.schema)))
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": f"k2-baseline-{os.getpid()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    remaining = {}
    for topic in args.topics:
        md = consumer.list_topics(topic, timeout=30)
        for p in md.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                remaining[(topic, p)] = high
    consumer.subscribe(args.topics)

    started = time.monotonic()
    rows, consumed, appends = [], 0, 0
    utc = timezone.utc

    def flush():
        nonlocal rows, appends
        if not rows:
            return
        table.append(pa.Table.from_pylist(rows, schema=arrow_schema))
        consumer.commit(asynchronous=False)
        appends += 1
        rows = []

    while remaining:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            raise SystemExit(f"consumer error: {msg.error()}")
        value = msg.value()
        magic, _schema_id = struct.unpack(">bI", value[:5])
        rec = fastavro.schemaless_reader(io.BytesIO(value[5:]), writer_schema, None)
        rec["exchange_timestamp"] = rec["exchange_timestamp"].astimezone(utc)
        rec["ingestion_timestamp"] = rec["ingestion_timestamp"].astimezone(utc)
        rec["kafka_topic"] = msg.topic()
        rec["kafka_partition"] = msg.partition()
        rec["kafka_offset"] = msg.offset()
        rows.append(rec)
        consumed += 1
        key = (msg.topic(), msg.partition())
        if key in remaining and msg.offset() + 1 >= remaining[key]:
            del remaining[key]
        if len(rows) >= COMMIT_RECORDS:
            flush()
    flush()
    seconds = time.monotonic() - started
    consumer.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"baseline: records={consumed} seconds={seconds:.3f} "
        f"records_per_second={consumed / seconds:.0f} appends={appends} "
        f"cpu_seconds={usage.ru_utime + usage.ru_stime:.3f} max_rss_mib={usage.ru_maxrss / 1024:.1f}"
    )


if __name__ == "__main__":
    main()
