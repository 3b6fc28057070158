//! Write: one table's buffered rows become sorted Parquet data files.
//!
//! Rows are sorted by (exchange, day, symbol, exchange_timestamp): the first two are the
//! partition, so each partition is one contiguous run of the order, handed to a
//! `ClusteredWriter` in chunks; within a partition every
//! file is sorted by the table's sort order (symbol, exchange_timestamp), which
//! iceberg-rust records but does not apply itself.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::compute::interleave_record_batch;
use arrow::datatypes::DataType as ArrowType;
use arrow_array::{Array, RecordBatch};
use iceberg::spec::DataContentType;
use iceberg::spec::{DataFile, DataFileFormat, Literal, PartitionKey, Struct, Transform};
use iceberg::table::Table;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::{RollingFileWriter, RollingFileWriterBuilder};
use iceberg::writer::file_writer::{FileWriterBuilder, ParquetWriterBuilder};
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::partitioning::clustered_writer::ClusteredWriter;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{Error, ErrorKind};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::layout::{EXCHANGE, EXCHANGE_TIMESTAMP, SYMBOL};

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Parquet settings for a table of `schema`, chosen with `k2-bench layout` (numbers and
/// reasons in ADR-21):
/// - row groups of 128k rows: files are sorted by symbol, so DuckDB skips every row group
///   whose symbol range misses the asked symbols; at 1M rows a typical symbol-day sits in
///   one group it must read almost all of (48 → 21 ms for a median symbol-day);
/// - dictionaries for string columns only (symbols, venues, topics repeat); timestamps,
///   sequence numbers and offsets are delta-encoded, other columns plain: their
///   dictionaries cost write time and bytes for values that hardly repeat;
/// - statistics down to pages (the page index), for readers that use it;
/// - zstd level 3.
///
/// The same for the sink's files and compaction's: a sink file (sorted by symbol too)
/// gains the same row-group pruning. Together these make a day's file a third smaller
/// (121 → 81 MiB) and a fifth faster to write.
pub fn writer_properties(schema: &arrow_schema::Schema) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_dictionary_enabled(true);
    for f in schema.fields() {
        let path = ColumnPath::from(f.name().as_str());
        match f.data_type() {
            ArrowType::Utf8 | ArrowType::LargeUtf8 | ArrowType::Utf8View => {}
            ArrowType::Int32 | ArrowType::Int64 | ArrowType::Timestamp(_, _) => {
                b = b
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
            }
            _ => b = b.set_column_dictionary_enabled(path, false),
        }
    }
    b.build()
}

/// Rows per Parquet row group (see [`writer_properties`]).
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

pub const TARGET_FILE_SIZE: usize = 512 * 1024 * 1024;

/// Rows copied into sorted order at a time on their way to the Parquet writer.
const WRITE_CHUNK_ROWS: usize = 64 * 1024;

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::DataInvalid, msg.into())
}

/// `batch` in `schema`: columns matched by name, absent ones null.
fn adapt(batch: &RecordBatch, schema: &arrow_schema::SchemaRef) -> Result<RecordBatch, Error> {
    if batch.schema() == *schema {
        return Ok(batch.clone());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => arrow::compute::cast(c, f.data_type()).map_err(|e| invalid(e.to_string())),
            None => Ok(arrow_array::new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| invalid(e.to_string()))
}

fn day_of(micros: i64) -> i32 {
    micros.div_euclid(MICROS_PER_DAY) as i32
}

/// Rows as (batch, row) pairs, in the order they are written.
type WriteOrder = Vec<(usize, usize)>;

/// One partition's rows: a contiguous run of the write order.
struct PartitionRun {
    exchange: String,
    /// Days since the epoch (0 for tables not partitioned by day).
    day: i32,
    rows: std::ops::Range<usize>,
}

/// The rows of `batches` in write order (as (batch, row) pairs) by (exchange, day, symbol,
/// exchange_timestamp) (`day` left out for unpartitioned tables), and the runs of that
/// order that form one partition. The string columns have few distinct values, so each
/// (exchange, day, symbol) group gets a rank once and rows are sorted by (rank, timestamp)
/// as plain integers: a generic multi-column sort compared strings on every comparison and
/// was half the cost of writing. Partitions fall out of the ranks: groups sort by
/// (exchange, day) first.
fn sort_order(
    batches: &[RecordBatch],
    partitioned: bool,
) -> Result<(WriteOrder, Vec<PartitionRun>), Error> {
    let arrow_err = |e: arrow::error::ArrowError| invalid(e.to_string());
    let column = |b: &RecordBatch, name: &str| {
        b.column_by_name(name)
            .cloned()
            .ok_or_else(|| invalid(format!("batch has no column {name}")))
    };
    let mut keys = Vec::with_capacity(batches.len());
    for b in batches {
        let exchange =
            arrow::compute::cast(&column(b, EXCHANGE)?, &ArrowType::Utf8).map_err(arrow_err)?;
        let symbol =
            arrow::compute::cast(&column(b, SYMBOL)?, &ArrowType::Utf8).map_err(arrow_err)?;
        let ts = column(b, EXCHANGE_TIMESTAMP)?;
        keys.push((exchange, symbol, ts));
    }
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut groups: HashMap<(&str, i32, &str), u32> = HashMap::new();
    let mut keyed: Vec<(u32, i64, u32, u32)> = Vec::with_capacity(rows);
    for (b, (exchange, symbol, ts)) in keys.iter().enumerate() {
        let (exchange, symbol) = (exchange.as_string::<i32>(), symbol.as_string::<i32>());
        let ts = ts
            .as_primitive_opt::<arrow::datatypes::TimestampMicrosecondType>()
            .ok_or_else(|| invalid("exchange_timestamp is not a microsecond timestamp"))?;
        for r in 0..ts.len() {
            let micros = ts.value(r);
            let day = if partitioned { day_of(micros) } else { 0 };
            let key = (exchange.value(r), day, symbol.value(r));
            let next = groups.len() as u32;
            let group = *groups.entry(key).or_insert(next);
            keyed.push((group, micros, b as u32, r as u32));
        }
    }
    let mut ordered: Vec<_> = groups.into_iter().collect();
    ordered.sort_unstable();
    let mut rank = vec![0u32; ordered.len()];
    for (r, (_, group)) in ordered.iter().enumerate() {
        rank[*group as usize] = r as u32;
    }
    for k in &mut keyed {
        k.0 = rank[k.0 as usize];
    }
    keyed.sort_unstable();
    let mut runs: Vec<PartitionRun> = Vec::new();
    for (i, k) in keyed.iter().enumerate() {
        let ((exchange, day, _), _) = ordered[k.0 as usize];
        match runs.last_mut() {
            Some(run) if run.exchange == exchange && run.day == day => run.rows.end = i + 1,
            _ => runs.push(PartitionRun {
                exchange: exchange.to_string(),
                day,
                rows: i..i + 1,
            }),
        }
    }
    let order = keyed
        .into_iter()
        .map(|(_, _, b, r)| (b as usize, r as usize))
        .collect();
    Ok((order, runs))
}

/// Sorts `batches` and writes them as data files of `table`. `file_prefix` makes file
/// names unique per job and attempt.
pub async fn write_data_files(
    table: &Table,
    batches: &[RecordBatch],
    file_prefix: &str,
) -> Result<Vec<DataFile>, Error> {
    write_sorted(table, batches, file_prefix, TARGET_FILE_SIZE).await
}

/// [`write_data_files`] rolling to a new file at `target_file_size` bytes (compaction picks
/// its own size).
pub async fn write_sorted(
    table: &Table,
    batches: &[RecordBatch],
    file_prefix: &str,
    target_file_size: usize,
) -> Result<Vec<DataFile>, Error> {
    // Batches read before a schema evolution lack the new columns: write every batch in
    // the table's current schema, the missing columns null.
    let schema = Arc::new(iceberg::arrow::schema_to_arrow_schema(
        table.metadata().current_schema(),
    )?);
    let adapted = batches
        .iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| adapt(b, &schema))
        .collect::<Result<Vec<_>, _>>()?;
    if adapted.is_empty() {
        return Ok(Vec::new());
    }
    let metadata = table.metadata();
    let spec = metadata.default_partition_spec().as_ref().clone();
    // The table's own partition spec says whether it is partitioned by day.
    let day_partitioned = spec.fields().iter().any(|f| f.transform == Transform::Day);
    // No sorted copy of the whole job: rows are copied into sorted order one chunk at a
    // time, just before the Parquet writer encodes them. Peak memory is the job's own
    // batches plus one chunk, not a second copy of the job.
    let (order, runs) = sort_order(&adapted, day_partitioned)?;
    let sources: Vec<&RecordBatch> = adapted.iter().collect();

    let table_schema = metadata.current_schema().clone();
    let parquet = ParquetWriterBuilder::new(writer_properties(&schema), table_schema.clone());
    let rolling = RollingFileWriterBuilder::new(
        parquet,
        target_file_size,
        table.file_io().clone(),
        DefaultLocationGenerator::new(metadata)?,
        DefaultFileNameGenerator::new(file_prefix.to_string(), None, DataFileFormat::Parquet),
    );
    let mut writer = ClusteredWriter::new(SortedDataFileWriterBuilder {
        inner: rolling,
        sort_order_id: i32::try_from(metadata.default_sort_order_id()).unwrap_or(0),
    });
    for run in runs {
        let mut values: Vec<Option<Literal>> = Vec::new();
        for field in spec.fields() {
            let source = table_schema
                .field_by_id(field.source_id)
                .map(|f| f.name.as_str())
                .unwrap_or_default();
            values.push(Some(match source {
                EXCHANGE_TIMESTAMP => Literal::date(run.day),
                EXCHANGE => Literal::string(&run.exchange),
                other => {
                    return Err(invalid(format!(
                        "K2 cannot compute partition values from column {other}"
                    )));
                }
            }));
        }
        let key = PartitionKey::new(
            spec.clone(),
            table_schema.clone(),
            Struct::from_iter(values),
        );
        for chunk in order[run.rows].chunks(WRITE_CHUNK_ROWS) {
            let rows =
                interleave_record_batch(&sources, chunk).map_err(|e| invalid(e.to_string()))?;
            writer.write(key.clone(), rows).await?;
        }
    }
    writer.close().await
}

/// Writes `batches`, already in the table's sort order and all of one partition, as data
/// files of that partition (`partition`: its values, in the order of the table's default
/// spec). For tables whose rows are built rather than received (the bars), where the
/// caller knows the partition and the order.
pub async fn write_partition(
    table: &Table,
    batches: &[RecordBatch],
    partition: Struct,
    file_prefix: &str,
) -> Result<Vec<DataFile>, Error> {
    let metadata = table.metadata();
    let schema = Arc::new(iceberg::arrow::schema_to_arrow_schema(
        metadata.current_schema(),
    )?);
    let parquet = ParquetWriterBuilder::new(
        writer_properties(&schema),
        metadata.current_schema().clone(),
    );
    let rolling = RollingFileWriterBuilder::new(
        parquet,
        TARGET_FILE_SIZE,
        table.file_io().clone(),
        DefaultLocationGenerator::new(metadata)?,
        DefaultFileNameGenerator::new(file_prefix.to_string(), None, DataFileFormat::Parquet),
    );
    let key = PartitionKey::new(
        metadata.default_partition_spec().as_ref().clone(),
        metadata.current_schema().clone(),
        partition,
    );
    let mut writer = SortedDataFileWriterBuilder {
        inner: rolling,
        sort_order_id: i32::try_from(metadata.default_sort_order_id()).unwrap_or(0),
    }
    .build(Some(key))
    .await?;
    for b in batches.iter().filter(|b| b.num_rows() > 0) {
        writer.write(adapt(b, &schema)?).await?;
    }
    writer.close().await
}

/// iceberg-rust's `DataFileWriterBuilder`, plus the table's sort order id on every file it
/// writes: K2 sorts the rows of each file by the table's sort order (above), and readers
/// that trust a declared order (Spark's merge-on-read planning, a compaction job choosing
/// what to rewrite) only see that it did through `sort_order_id`. Upstream's writer has no
/// way to set it (its builder is built inside `close`).
struct SortedDataFileWriterBuilder<B, L, F>
where
    B: FileWriterBuilder,
    L: iceberg::writer::file_writer::location_generator::LocationGenerator,
    F: iceberg::writer::file_writer::location_generator::FileNameGenerator,
{
    inner: RollingFileWriterBuilder<B, L, F>,
    sort_order_id: i32,
}

struct SortedDataFileWriter<B, L, F>
where
    B: FileWriterBuilder,
    L: iceberg::writer::file_writer::location_generator::LocationGenerator,
    F: iceberg::writer::file_writer::location_generator::FileNameGenerator,
{
    inner: Option<RollingFileWriter<B, L, F>>,
    partition_key: Option<PartitionKey>,
    sort_order_id: i32,
}

#[async_trait::async_trait]
impl<B, L, F> IcebergWriterBuilder for SortedDataFileWriterBuilder<B, L, F>
where
    B: FileWriterBuilder,
    L: iceberg::writer::file_writer::location_generator::LocationGenerator,
    F: iceberg::writer::file_writer::location_generator::FileNameGenerator,
{
    type R = SortedDataFileWriter<B, L, F>;

    async fn build(&self, partition_key: Option<PartitionKey>) -> iceberg::Result<Self::R> {
        Ok(SortedDataFileWriter {
            inner: Some(self.inner.build()),
            partition_key,
            sort_order_id: self.sort_order_id,
        })
    }
}

#[async_trait::async_trait]
impl<B, L, F> IcebergWriter for SortedDataFileWriter<B, L, F>
where
    B: FileWriterBuilder,
    L: iceberg::writer::file_writer::location_generator::LocationGenerator,
    F: iceberg::writer::file_writer::location_generator::FileNameGenerator,
{
    async fn write(&mut self, batch: RecordBatch) -> iceberg::Result<()> {
        match self.inner.as_mut() {
            Some(w) => w.write(&self.partition_key, &batch).await,
            None => Err(Error::new(ErrorKind::Unexpected, "the writer is closed")),
        }
    }

    async fn close(&mut self) -> iceberg::Result<Vec<DataFile>> {
        let Some(writer) = self.inner.take() else {
            return Err(Error::new(ErrorKind::Unexpected, "the writer is closed"));
        };
        writer
            .close()
            .await?
            .into_iter()
            .map(|mut file| {
                file.content(DataContentType::Data)
                    .sort_order_id(self.sort_order_id);
                if let Some(pk) = &self.partition_key {
                    file.partition(pk.data().clone())
                        .partition_spec_id(pk.spec().spec_id());
                }
                file.build()
                    .map_err(|e| invalid(format!("building a data file's entry: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::{ArrayRef, StringArray, TimestampMicrosecondArray};
    use arrow_schema::{Field, Schema, TimeUnit};

    use super::*;

    #[test]
    fn dictionaries_for_strings_deltas_for_integers_and_times() {
        let schema = Schema::new(vec![
            Field::new(SYMBOL, ArrowType::Utf8, false),
            Field::new(
                EXCHANGE_TIMESTAMP,
                ArrowType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                false,
            ),
            Field::new("sequence_number", ArrowType::Int64, false),
            Field::new("price", ArrowType::Decimal128(18, 8), false),
        ]);
        let p = writer_properties(&schema);
        let col = |n: &str| ColumnPath::from(n);
        assert!(p.dictionary_enabled(&col(SYMBOL)));
        assert_eq!(
            p.encoding(&col(SYMBOL)),
            None,
            "dictionary, then parquet's default"
        );
        for n in [EXCHANGE_TIMESTAMP, "sequence_number"] {
            assert!(!p.dictionary_enabled(&col(n)), "{n}");
            assert_eq!(
                p.encoding(&col(n)),
                Some(Encoding::DELTA_BINARY_PACKED),
                "{n}"
            );
        }
        assert!(!p.dictionary_enabled(&col("price")));
        assert_eq!(p.encoding(&col("price")), None, "plain");
        assert_eq!(p.max_row_group_row_count(), Some(ROW_GROUP_ROWS));
    }

    fn batch(rows: &[(&str, &str, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(EXCHANGE, ArrowType::Utf8, false),
            Field::new(SYMBOL, ArrowType::Utf8, false),
            Field::new(
                EXCHANGE_TIMESTAMP,
                ArrowType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                false,
            ),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.2))
                    .with_timezone("+00:00"),
            ),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    #[test]
    fn rows_sort_by_exchange_day_symbol_time_and_partitions_are_runs_of_the_order() {
        let day = MICROS_PER_DAY;
        let batches = [
            batch(&[
                ("asx", "CBA", day + 5),
                ("asx", "BHP", 7),
                ("asx", "BHP", 3),
            ]),
            batch(&[("binance", "BTC", 1), ("asx", "BHP", day + 1)]),
        ];
        let (order, runs) = sort_order(&batches, true).unwrap();
        assert_eq!(order, [(0, 2), (0, 1), (1, 1), (0, 0), (1, 0)]);
        let runs: Vec<(&str, i32, std::ops::Range<usize>)> = runs
            .iter()
            .map(|r| (r.exchange.as_str(), r.day, r.rows.clone()))
            .collect();
        assert_eq!(
            runs,
            [("asx", 0, 0..2), ("asx", 1, 2..4), ("binance", 0, 4..5)]
        );

        // Not partitioned by day: one run per exchange, still sorted by symbol and time.
        let (order, runs) = sort_order(&batches, false).unwrap();
        assert_eq!(order, [(0, 2), (0, 1), (1, 1), (0, 0), (1, 0)]);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].rows, 0..4);
    }
}
