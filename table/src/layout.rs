//! The Iceberg tables K2 writes: their schema (derived from the Avro schema plus lineage
//! columns), partitioning, sort order, and idempotent creation.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::Schema as AvroSchema;
use apache_avro::schema::{RecordSchema, UnionSchema};
use arrow_schema::SchemaRef as ArrowSchemaRef;
use iceberg::spec::{
    NestedField, NullOrder, PrimitiveType, Schema, SortDirection, SortField, SortOrder,
    TableProperties, Transform, Type, UnboundPartitionSpec,
};
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
use iceberg::{Catalog, ErrorKind, NamespaceIdent, TableCreation, TableIdent};

use k2_common::catalog::NAMESPACE;
use k2_common::data_type::{BARS_1M_TABLE, DataType, SEQUENCE_EVENTS_TABLE};

/// Columns the sink adds to every row: where it came from in Kafka and when it landed.
pub const KAFKA_TOPIC: &str = "kafka_topic";
pub const KAFKA_PARTITION: &str = "kafka_partition";
pub const KAFKA_OFFSET: &str = "kafka_offset";
pub const INGESTED_AT: &str = "ingested_at";

/// Partition and sort columns every K2 market-data table has.
pub const SYMBOL: &str = "symbol";
pub const EXCHANGE: &str = "exchange";
pub const EXCHANGE_TIMESTAMP: &str = "exchange_timestamp";

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(
        "Avro schema for {table} cannot be mapped to Iceberg: field `{field}` has type {avro_type}"
    )]
    UnsupportedType {
        table: String,
        field: String,
        avro_type: String,
    },
    #[error("Avro schema for {0} is not a record")]
    NotARecord(String),
    /// (An iceberg error prints its own cause: it is part of the message, not a source.)
    #[error("catalog: {context}: {error}")]
    Catalog {
        context: String,
        error: Box<iceberg::Error>,
    },
}

fn catalog_err(context: impl Into<String>) -> impl FnOnce(iceberg::Error) -> TableError {
    let context = context.into();
    move |error| TableError::Catalog {
        context,
        error: Box::new(error),
    }
}

/// One table's layout, shared by the decoder (which columns exist) and the writer.
#[derive(Debug, Clone)]
pub struct TableLayout {
    pub ident: TableIdent,
    /// Partitioned by `day(exchange_timestamp)` as well as exchange (all but reference data).
    pub day_partitioned: bool,
    pub schema: Arc<Schema>,
    /// The Iceberg schema as Arrow, with field ids in the metadata.
    pub arrow_schema: ArrowSchemaRef,
    pub partition_spec: UnboundPartitionSpec,
    pub sort_order: SortOrder,
}

/// The K2 table `name` (`trades`, `sequence_events`, …) in K2's namespace.
pub fn ident(name: &str) -> TableIdent {
    TableIdent::new(NamespaceIdent::new(NAMESPACE.to_string()), name.to_string())
}

pub fn sequence_events_ident() -> TableIdent {
    ident(SEQUENCE_EVENTS_TABLE)
}

pub fn table_ident(data_type: DataType) -> TableIdent {
    ident(data_type.table_name())
}

impl TableLayout {
    /// The layout K2 creates for a data type from its Avro (reader) schema.
    pub fn new(data_type: DataType, avro: &AvroSchema) -> Result<Self, TableError> {
        let table = data_type.table_name();
        let AvroSchema::Record(record) = avro else {
            return Err(TableError::NotARecord(table.to_string()));
        };
        let mut fields = record_fields(table, record)?;
        let first_id = fields.len() as i32 + 1;
        for (i, (name, ty, doc)) in [
            (
                KAFKA_TOPIC,
                PrimitiveType::String,
                "Kafka topic the record was read from.",
            ),
            (
                KAFKA_PARTITION,
                PrimitiveType::Int,
                "Kafka partition of the record.",
            ),
            (
                KAFKA_OFFSET,
                PrimitiveType::Long,
                "Kafka offset of the record.",
            ),
            (
                INGESTED_AT,
                PrimitiveType::Timestamptz,
                "When the sink decoded the record.",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            fields.push(Arc::new(
                NestedField::required(first_id + i as i32, name, Type::Primitive(ty)).with_doc(doc),
            ));
        }
        let schema = Schema::builder()
            .with_schema_id(0)
            .with_fields(fields)
            .build()
            .map_err(catalog_err(format!("schema of {table}")))?;
        Self::from_schema(data_type, Arc::new(schema))
    }

    /// The layout of an existing table (its schema may have evolved since creation).
    pub fn from_schema(data_type: DataType, schema: Arc<Schema>) -> Result<Self, TableError> {
        Self::for_table(
            table_ident(data_type),
            schema,
            data_type.describe().day_partitioned,
        )
    }

    /// `market_data.sequence_events`: one row per sequence gap, out-of-order record or
    /// reset the sink detected, with the lineage of the record that revealed it.
    pub fn sequence_events() -> Result<Self, TableError> {
        let ts = || Type::Primitive(PrimitiveType::Timestamptz);
        let string = || Type::Primitive(PrimitiveType::String);
        let long = || Type::Primitive(PrimitiveType::Long);
        let fields = vec![
            NestedField::required(1, EXCHANGE, string()),
            NestedField::required(2, "data_type", string()),
            NestedField::required(3, SYMBOL, string()),
            NestedField::required(4, "kind", string()).with_doc("gap, out_of_order or reset"),
            NestedField::optional(5, "expected", long()).with_doc("Sequence number expected"),
            NestedField::required(6, "actual", long()).with_doc("Sequence number received"),
            NestedField::optional(7, "gap_size", long())
                .with_doc("Sequence numbers missing (gaps only)"),
            NestedField::required(8, EXCHANGE_TIMESTAMP, ts()),
            NestedField::required(9, KAFKA_TOPIC, string()),
            NestedField::required(10, KAFKA_PARTITION, Type::Primitive(PrimitiveType::Int)),
            NestedField::required(11, KAFKA_OFFSET, long()),
            NestedField::required(12, "detected_at", ts()),
        ];
        let schema = Schema::builder()
            .with_schema_id(0)
            .with_fields(fields.into_iter().map(Arc::new))
            .build()
            .map_err(catalog_err("schema of sequence_events"))?;
        Self::for_table(sequence_events_ident(), Arc::new(schema), true)
    }

    /// `market_data.bars_1m`: one row per symbol and minute with trades (see
    /// [`crate::bars`]). Partitioned by day and exchange like the trades it is built from,
    /// and by `built_from`, the fingerprint of the day's trades files: a planner learns from
    /// the partition values alone, without reading a row, whether a day's bars describe the
    /// trades a pinned snapshot sees.
    pub fn bars_1m() -> Result<Self, TableError> {
        use crate::bars::{BUCKET_START, BUILT_FROM};
        let p = |t: PrimitiveType| Type::Primitive(t);
        let price = || {
            p(PrimitiveType::Decimal {
                precision: 18,
                scale: 8,
            })
        };
        let long = || p(PrimitiveType::Long);
        let fields = vec![
            NestedField::required(1, SYMBOL, p(PrimitiveType::String)),
            NestedField::required(2, EXCHANGE, p(PrimitiveType::String)),
            NestedField::required(3, BUCKET_START, p(PrimitiveType::Timestamptz))
                .with_doc("Start of the minute (UTC)"),
            NestedField::required(4, "open", price())
                .with_doc("Price of the first trade by (exchange_timestamp, sequence_number)"),
            NestedField::required(5, "high", price()),
            NestedField::required(6, "low", price()),
            NestedField::required(7, "close", price())
                .with_doc("Price of the last trade by (exchange_timestamp, sequence_number)"),
            NestedField::required(
                8,
                "volume",
                p(PrimitiveType::Decimal {
                    precision: 38,
                    scale: 8,
                }),
            )
            .with_doc("Sum of quantity"),
            NestedField::required(
                9,
                "notional",
                p(PrimitiveType::Decimal {
                    precision: 38,
                    scale: 16,
                }),
            )
            .with_doc("Sum of price × quantity, exact: VWAP of any set of bars is sum(notional) / sum(volume)"),
            NestedField::required(10, "trades", long()).with_doc("Number of trades"),
            NestedField::required(11, "first_sequence", long())
                .with_doc("Sequence number of the opening trade"),
            NestedField::required(12, "last_sequence", long())
                .with_doc("Sequence number of the closing trade"),
            NestedField::required(13, BUILT_FROM, p(PrimitiveType::String)).with_doc(
                "Fingerprint of the trades files of the day the bars were built from",
            ),
        ];
        let schema = Schema::builder()
            .with_schema_id(0)
            .with_fields(fields.into_iter().map(Arc::new))
            .build()
            .map_err(catalog_err("schema of bars_1m"))?;
        let spec = UnboundPartitionSpec::builder()
            .with_spec_id(0)
            .add_partition_field(3, "bucket_start_day", Transform::Day)
            .and_then(|b| b.add_partition_field(2, EXCHANGE, Transform::Identity))
            .and_then(|b| b.add_partition_field(13, BUILT_FROM, Transform::Identity))
            .map_err(catalog_err("partition spec"))?
            .build();
        let sort_order = SortOrder::builder()
            .with_order_id(1)
            .with_sort_field(sort_field(1))
            .with_sort_field(sort_field(3))
            .build(&schema)
            .map_err(catalog_err("sort order"))?;
        let arrow_schema = Arc::new(
            iceberg::arrow::schema_to_arrow_schema(&schema).map_err(catalog_err("arrow schema"))?,
        );
        Ok(TableLayout {
            ident: ident(BARS_1M_TABLE),
            day_partitioned: true,
            schema: Arc::new(schema),
            arrow_schema,
            partition_spec: spec,
            sort_order,
        })
    }

    fn for_table(
        ident: TableIdent,
        schema: Arc<Schema>,
        day_partitioned: bool,
    ) -> Result<Self, TableError> {
        let table = ident.name().to_string();
        let id = |name: &str| {
            schema
                .field_by_name(name)
                .map(|f| f.id)
                .ok_or_else(|| TableError::UnsupportedType {
                    table: table.to_string(),
                    field: name.to_string(),
                    avro_type: "missing".into(),
                })
        };
        let mut spec = UnboundPartitionSpec::builder().with_spec_id(0);
        if day_partitioned {
            spec = spec
                .add_partition_field(
                    id(EXCHANGE_TIMESTAMP)?,
                    "exchange_timestamp_day",
                    Transform::Day,
                )
                .map_err(catalog_err("partition spec"))?;
        }
        spec = spec
            .add_partition_field(id(EXCHANGE)?, EXCHANGE, Transform::Identity)
            .map_err(catalog_err("partition spec"))?;
        let sort_order = SortOrder::builder()
            .with_order_id(1)
            .with_sort_field(sort_field(id(SYMBOL)?))
            .with_sort_field(sort_field(id(EXCHANGE_TIMESTAMP)?))
            .build(&schema)
            .map_err(catalog_err("sort order"))?;
        let arrow_schema = Arc::new(
            iceberg::arrow::schema_to_arrow_schema(&schema).map_err(catalog_err("arrow schema"))?,
        );
        Ok(TableLayout {
            ident,
            day_partitioned,
            schema,
            arrow_schema,
            partition_spec: spec.build(),
            sort_order,
        })
    }
}

fn sort_field(source_id: i32) -> SortField {
    SortField::builder()
        .source_id(source_id)
        .transform(Transform::Identity)
        .direction(SortDirection::Ascending)
        .null_order(NullOrder::First)
        .build()
}

fn record_fields(table: &str, record: &RecordSchema) -> Result<Vec<Arc<NestedField>>, TableError> {
    record
        .fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let id = i as i32 + 1;
            let (ty, optional) = iceberg_type(table, &f.name, &f.schema)?;
            let field = if optional {
                NestedField::optional(id, &f.name, Type::Primitive(ty))
            } else {
                NestedField::required(id, &f.name, Type::Primitive(ty))
            };
            Ok(Arc::new(match &f.doc {
                Some(doc) => field.with_doc(doc),
                None => field,
            }))
        })
        .collect()
}

/// The Iceberg type of an Avro field, and whether it is optional (a union with null).
pub fn iceberg_type(
    table: &str,
    field: &str,
    schema: &AvroSchema,
) -> Result<(PrimitiveType, bool), TableError> {
    let unsupported = || TableError::UnsupportedType {
        table: table.to_string(),
        field: field.to_string(),
        avro_type: format!("{schema:?}"),
    };
    if let AvroSchema::Union(u) = schema {
        let inner = non_null_branch(u).ok_or_else(unsupported)?;
        let (ty, _) = iceberg_type(table, field, inner)?;
        return Ok((ty, true));
    }
    let ty = match schema {
        AvroSchema::String | AvroSchema::Enum(_) | AvroSchema::Uuid => PrimitiveType::String,
        AvroSchema::Boolean => PrimitiveType::Boolean,
        AvroSchema::Int => PrimitiveType::Int,
        AvroSchema::Long => PrimitiveType::Long,
        AvroSchema::Float => PrimitiveType::Float,
        AvroSchema::Double => PrimitiveType::Double,
        AvroSchema::Bytes => PrimitiveType::Binary,
        AvroSchema::Date => PrimitiveType::Date,
        AvroSchema::TimestampMicros | AvroSchema::TimestampMillis => PrimitiveType::Timestamptz,
        AvroSchema::LocalTimestampMicros | AvroSchema::LocalTimestampMillis => {
            PrimitiveType::Timestamp
        }
        AvroSchema::Decimal(d) => PrimitiveType::Decimal {
            precision: d.precision as u32,
            scale: d.scale as u32,
        },
        _ => return Err(unsupported()),
    };
    Ok((ty, false))
}

/// The non-null branch of a `["null", T]` union; other unions are not supported.
fn non_null_branch(u: &UnionSchema) -> Option<&AvroSchema> {
    let variants = u.variants();
    match variants {
        [AvroSchema::Null, t] | [t, AvroSchema::Null] => Some(t),
        _ => None,
    }
}

/// Metadata files kept in the log (and so on storage: older ones are deleted as they drop
/// out, see [`table_properties`]).
pub const METADATA_VERSIONS_KEPT: usize = 20;

/// Properties every K2 table carries. None of them constrains other engines' writers: K2
/// commits through its own loop (`k2_table::commit`), so the table needs no
/// `commit.retry.*` setting of its own.
pub fn table_properties() -> HashMap<String, String> {
    HashMap::from([
        ("write.format.default".into(), "parquet".into()),
        ("write.parquet.compression-codec".into(), "zstd".into()),
        // Metadata files are pruned as they are replaced: the metadata/ folder stays small
        // without waiting for orphan cleanup.
        (
            TableProperties::PROPERTY_METADATA_PREVIOUS_VERSIONS_MAX.to_string(),
            METADATA_VERSIONS_KEPT.to_string(),
        ),
        (
            crate::commit::DELETE_AFTER_COMMIT.to_string(),
            "true".into(),
        ),
        // Merged manifests of 1 MiB rather than Iceberg's 8: a merge rewrites up to this
        // much inside a commit, and a sink at 1-s commits fills 8 MiB of a day's manifest
        // entries in under an hour — its merges, one commit in a hundred, grew to seconds
        // (ADR-23, `bench/soak`). More, smaller manifests plan the same entries.
        (
            crate::stage::append::TARGET_SIZE_BYTES.into(),
            MANIFEST_TARGET_SIZE_BYTES.to_string(),
        ),
        ("k2.managed".into(), "true".into()),
    ])
}

/// The merged manifest size K2's tables ask for (`commit.manifest.target-size-bytes`).
pub const MANIFEST_TARGET_SIZE_BYTES: u64 = 1024 * 1024;

/// Tables K2 created before carry `commit.retry.num-retries = 0`, which every engine obeys
/// (their commits beside a running sink would fail on the first conflict): K2 removed it.
const RETIRED_PROPERTY: (&str, &str) = (TableProperties::PROPERTY_COMMIT_NUM_RETRIES, "0");

/// What a K2 table's properties lack or carry that [`table_properties`] says otherwise
/// (tables created by an older K2): the properties to set, and those to remove. Applied
/// with the sink's next commit.
pub fn property_upgrades(
    current: &HashMap<String, String>,
) -> (HashMap<String, String>, Vec<String>) {
    if current.get("k2.managed").map(String::as_str) != Some("true") {
        return (HashMap::new(), Vec::new());
    }
    let set = table_properties()
        .into_iter()
        .filter(|(k, _)| !current.contains_key(k))
        .collect();
    let remove = match current.get(RETIRED_PROPERTY.0) {
        Some(v) if v == RETIRED_PROPERTY.1 => vec![RETIRED_PROPERTY.0.to_string()],
        _ => Vec::new(),
    };
    (set, remove)
}

/// Creates the namespace and table if they do not exist. Safe to call from several
/// processes at once: losing a creation race is success.
pub async fn ensure_table(
    catalog: &dyn Catalog,
    layout: &TableLayout,
) -> Result<iceberg::table::Table, TableError> {
    let ns = layout.ident.namespace().clone();
    if !catalog
        .namespace_exists(&ns)
        .await
        .map_err(catalog_err("namespace lookup"))?
        && let Err(e) = catalog.create_namespace(&ns, HashMap::new()).await
        && e.kind() != ErrorKind::NamespaceAlreadyExists
        && !catalog.namespace_exists(&ns).await.unwrap_or(false)
    {
        return Err(catalog_err(format!("create namespace {NAMESPACE}"))(e));
    }
    if let Ok(t) = catalog.load_table(&layout.ident).await {
        return Ok(t);
    }
    let creation = TableCreation::builder()
        .name(layout.ident.name().to_string())
        .schema(layout.schema.as_ref().clone())
        .partition_spec(layout.partition_spec.clone())
        .sort_order(layout.sort_order.clone())
        .properties(table_properties())
        .build();
    match catalog.create_table(&ns, creation).await {
        Ok(t) => Ok(t),
        // Another sink created it between our lookup and our create.
        Err(e) => catalog
            .load_table(&layout.ident)
            .await
            .map_err(|_| catalog_err(format!("create table {}", layout.ident))(e)),
    }
}

/// Adds to the table, as optional columns, every field of `avro` (a newer writer schema of
/// its data type) that the table lacks. Idempotent, and safe against a concurrent
/// evolution by another sink: a conflict reloads and re-checks. Returns the table as it
/// is afterwards.
pub async fn evolve_table(
    catalog: &dyn Catalog,
    data_type: DataType,
    avro: &AvroSchema,
) -> Result<iceberg::table::Table, TableError> {
    let table_name = data_type.table_name();
    let AvroSchema::Record(record) = avro else {
        return Err(TableError::NotARecord(table_name.to_string()));
    };
    let ident = table_ident(data_type);
    let mut conflicts = 0;
    loop {
        let table = catalog
            .load_table(&ident)
            .await
            .map_err(catalog_err(format!("load {ident}")))?;
        let current = table.metadata().current_schema().clone();
        let mut added = Vec::new();
        for f in &record.fields {
            if current.field_by_name(&f.name).is_none() {
                let (ty, _) = iceberg_type(table_name, &f.name, &f.schema)?;
                added.push(AddColumn::optional(&f.name, Type::Primitive(ty)));
            }
        }
        if added.is_empty() {
            return Ok(table);
        }
        let names: Vec<String> = record
            .fields
            .iter()
            .filter(|f| current.field_by_name(&f.name).is_none())
            .map(|f| f.name.clone())
            .collect();
        let tx = Transaction::new(&table);
        let mut update = tx.update_schema();
        for column in added {
            update = update.add_column(column);
        }
        let tx = update
            .apply(tx)
            .map_err(catalog_err(format!("evolve {ident}")))?;
        match tx.commit(catalog).await {
            Ok(t) => {
                tracing::info!(table = %ident, columns = ?names, "table schema evolved");
                return Ok(t);
            }
            Err(e) if conflicts < 10 => {
                // Another sink may have evolved the table first (iceberg-rust re-applies the
                // update on the new head and then fails on the column it finds there): what
                // matters is whether the table has the columns now, which the next turn of
                // the loop checks.
                tracing::debug!(table = %ident, error = %e, "evolving the table failed; checking again");
                conflicts += 1;
            }
            Err(e) => return Err(catalog_err(format!("evolve {ident}"))(e)),
        }
    }
}
