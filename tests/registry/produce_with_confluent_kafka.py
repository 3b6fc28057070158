#!/usr/bin/env python3
"""Reference producer: trades serialized by the official confluent-kafka client
(AvroSerializer + Schema Registry), so K2's decoding is checked against the wire format
other producers really write.

Usage: produce_with_confluent_kafka.py BOOTSTRAP REGISTRY_URL TOPIC SUBJECT SCHEMA_FILE N EXCHANGE
Prints one JSON line per record produced: {"sequence_number", "price", "quantity", "ts"}.
"""
import datetime
import decimal
import json
import sys

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

bootstrap, registry_url, topic, subject, schema_file, n, exchange = sys.argv[1:8]
schema = open(schema_file).read()
registry = SchemaRegistryClient({"url": registry_url})
serializer = AvroSerializer(
    registry,
    schema,
    conf={"subject.name.strategy": lambda ctx, record_name: subject},
)
producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
base = datetime.datetime(2014, 3, 11, 0, 0, tzinfo=datetime.timezone.utc)
for seq in range(1, int(n) + 1):
    price = decimal.Decimal("36.10000000") + decimal.Decimal(seq) / 100
    quantity = decimal.Decimal(seq * 10).quantize(decimal.Decimal("0.00000001"))
    ts = base + datetime.timedelta(seconds=seq, microseconds=seq)
    record = {
        "symbol": "BHP",
        "company_id": 7078,
        "exchange": exchange,
        "asset_class": "equities",
        "exchange_timestamp": ts,
        "price": price.quantize(decimal.Decimal("0.00000001")),
        "quantity": quantity,
        "side": "BUY" if seq % 2 else "SELL",
        "qualifiers": None,
        "venue": "X",
        "sequence_number": seq,
        "ingestion_timestamp": ts,
        "isin": "AU000000BHP4",
        "contract_type": None,
        "settlement_currency": None,
        "funding_rate": None,
    }
    value = serializer(record, SerializationContext(topic, MessageField.VALUE))
    producer.produce(topic, key=b"BHP", value=value)
    print(json.dumps({
        "sequence_number": seq,
        "price": str(record["price"]),
        "quantity": str(quantity),
        "ts": int(ts.timestamp()) * 1_000_000 + ts.microsecond,
    }))
producer.flush(30)
