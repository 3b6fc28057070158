//! The decode stage: every record to a row in its table's reader schema, or to a dead letter
//! with the reason.
//!
//! It owns the writer schemas (from the registry or the config), one [`avro::SchemaDecoder`] per
//! (data type, writer schema id), and each table's current layout. A writer schema with
//! fields the table lacks is a newer version of the data type's schema: if it can read
//! everything written before (BACKWARD), the table gains the fields as optional columns and
//! every decoder of the data type is rebuilt, without a restart. Otherwise its records are
//! refused.
//!
//! Rows leave in [`Decoded`] batches, each with the layout it was decoded for: rows decoded
//! before an evolution keep the older layout (the writer pads them with nulls).

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::Catalog;
use rustc_hash::FxBuildHasher;

use k2_common::data_type::DataType;
use k2_common::schema::check_backward;

use k2_table::layout::{TableError, TableLayout, evolve_table};

pub mod avro;

pub use avro::{DECODE_BATCH_ROWS, RawRecord, Rejected, SchemaSource};
use avro::{DecodeErrorKind, DecodedBatch, SchemaDecoder, WriterSchemas, schema_id};

#[derive(Debug, thiserror::Error)]
pub enum DecodingError {
    #[error("decoding {data_type} records: {message}")]
    Decoder {
        data_type: &'static str,
        message: String,
    },
    #[error("table {data_type} is not known to the decode stage")]
    UnknownTable { data_type: &'static str },
    #[error(transparent)]
    Table(#[from] TableError),
}

/// Rows of one data type decoded with one writer schema, and the layout of the table they
/// go to.
#[derive(Debug)]
pub struct Decoded {
    pub data_type: DataType,
    pub layout: Arc<TableLayout>,
    pub rows: Option<DecodedBatch>,
    /// Records found bad only when the batch was built (arrow validates whole arrays).
    pub rejected: Vec<Rejected>,
}

/// What the stage did with one record.
#[derive(Debug)]
pub enum Pushed {
    /// Decoded; its row leaves with a later batch.
    Accepted,
    /// Not decodable: goes to the dead-letter topic.
    Rejected(Box<Rejected>),
    /// A record without a value on a compacted topic: a tombstone. Nothing to write (the
    /// table keeps the key's history); counted, and its offset is handled like any other.
    Tombstone,
}

enum DecoderSlot {
    Ready(Box<SchemaDecoder>),
    /// The writer schema cannot be read as the table's schema: every record is rejected.
    Incompatible(String),
}

/// A data type's table as the stage knows it.
struct TableSchema {
    layout: Arc<TableLayout>,
    /// The Avro schema rows are decoded into (the newest writer schema the table has
    /// evolved to, or the shipped one).
    reader: Arc<str>,
}

pub struct Decoding {
    writer_schemas: WriterSchemas,
    tables: HashMap<DataType, TableSchema>,
    decoders: HashMap<(DataType, u32), DecoderSlot, FxBuildHasher>,
    catalog: Arc<dyn Catalog>,
    runtime: tokio::runtime::Handle,
    batch_rows: usize,
}

impl Decoding {
    pub fn new(
        source: SchemaSource,
        catalog: Arc<dyn Catalog>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Decoding {
            writer_schemas: WriterSchemas::new(source),
            tables: HashMap::new(),
            decoders: HashMap::default(),
            catalog,
            runtime,
            batch_rows: DECODE_BATCH_ROWS,
        }
    }

    /// Rows per decoded batch (the default suits the sink; tests use small ones).
    pub fn with_batch_rows(mut self, rows: usize) -> Self {
        self.batch_rows = rows.max(1);
        self
    }

    /// Decodes `data_type` records into `layout` (the table as it is now), reading them as
    /// `reader` (the Avro schema of that layout).
    pub fn add_table(&mut self, data_type: DataType, layout: TableLayout, reader: &str) {
        self.tables.insert(
            data_type,
            TableSchema {
                layout: Arc::new(layout),
                reader: Arc::from(reader),
            },
        );
    }

    fn table(&self, data_type: DataType) -> Result<&TableSchema, DecodingError> {
        self.tables
            .get(&data_type)
            .ok_or(DecodingError::UnknownTable {
                data_type: data_type.as_str(),
            })
    }

    /// Decodes one record of `data_type`. Full batches (and, on a schema evolution, every
    /// pending row) are appended to `out`.
    pub fn push(
        &mut self,
        data_type: DataType,
        rec: &RawRecord<'_>,
        has_value: bool,
        out: &mut Vec<Decoded>,
    ) -> Result<Pushed, DecodingError> {
        if !has_value && data_type.describe().compacted {
            return Ok(Pushed::Tombstone);
        }
        let reject = |kind: DecodeErrorKind, message: String| {
            Ok(Pushed::Rejected(Box::new(Rejected::raw(
                rec,
                has_value,
                kind.as_str(),
                message,
            ))))
        };
        let id = match schema_id(has_value.then_some(rec.value)) {
            Ok(id) => id,
            Err((kind, message)) => return reject(kind, message),
        };
        if !self.decoders.contains_key(&(data_type, id)) {
            match self.new_decoder(data_type, id, out)? {
                Some(slot) => {
                    self.decoders.insert((data_type, id), slot);
                }
                None => {
                    return reject(
                        DecodeErrorKind::UnknownSchemaId,
                        format!("schema id {id} is not known to the schema source"),
                    );
                }
            }
        }
        let slot = self
            .decoders
            .get_mut(&(data_type, id))
            .expect("inserted above");
        let full = match slot {
            DecoderSlot::Incompatible(why) => {
                return reject(
                    DecodeErrorKind::IncompatibleSchema,
                    format!("writer schema {id} cannot be read as the table's schema: {why}"),
                );
            }
            DecoderSlot::Ready(decoder) => match decoder.push(rec) {
                Ok(()) => decoder.is_full(),
                Err(message) => return reject(DecodeErrorKind::Undecodable, message),
            },
        };
        if full {
            self.flush_one(data_type, id, out)?;
        }
        Ok(Pushed::Accepted)
    }

    /// Every pending row, into `out`.
    pub fn flush(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodingError> {
        let pending: Vec<(DataType, u32)> = self
            .decoders
            .iter()
            .filter(|(_, slot)| matches!(slot, DecoderSlot::Ready(d) if d.pending_rows() > 0))
            .map(|(k, _)| *k)
            .collect();
        for (data_type, id) in pending {
            self.flush_one(data_type, id, out)?;
        }
        Ok(())
    }

    fn flush_one(
        &mut self,
        data_type: DataType,
        id: u32,
        out: &mut Vec<Decoded>,
    ) -> Result<(), DecodingError> {
        let Some(DecoderSlot::Ready(decoder)) = self.decoders.get_mut(&(data_type, id)) else {
            return Ok(());
        };
        let (decoded, rejected) = decoder.flush().map_err(|message| DecodingError::Decoder {
            data_type: data_type.as_str(),
            message,
        })?;
        let layout = self.table(data_type)?.layout.clone();
        if decoded.is_some() || !rejected.is_empty() {
            out.push(Decoded {
                data_type,
                layout,
                rows: decoded,
                rejected,
            });
        }
        Ok(())
    }

    /// A decoder for this writer schema id, `None` if the id is unknown.
    fn new_decoder(
        &mut self,
        data_type: DataType,
        id: u32,
        out: &mut Vec<Decoded>,
    ) -> Result<Option<DecoderSlot>, DecodingError> {
        let Some(writer) = self.writer_schema(id) else {
            return Ok(None);
        };
        if let Some(refused) = self.evolve(data_type, id, &writer, out)? {
            return Ok(Some(refused));
        }
        self.build_decoder(data_type, id, &writer).map(Some)
    }

    /// Blocks while the registry is unreachable: skipping ahead would lose the record's
    /// place.
    fn writer_schema(&mut self, id: u32) -> Option<Arc<str>> {
        let (runtime, schemas) = (&self.runtime, &mut self.writer_schemas);
        k2_common::retry::retry_blocking(
            &format!("looking up writer schema {id} in the registry"),
            || runtime.block_on(schemas.get(id)),
            |_| true,
            |_| {},
        )
        .unwrap_or_default()
    }

    fn build_decoder(
        &self,
        data_type: DataType,
        id: u32,
        writer: &str,
    ) -> Result<DecoderSlot, DecodingError> {
        let reader = &self.table(data_type)?.reader;
        Ok(
            match SchemaDecoder::new(id, writer, reader, self.batch_rows) {
                Ok(d) => {
                    tracing::info!(
                        schema_id = id,
                        table = data_type.table_name(),
                        "new writer schema"
                    );
                    DecoderSlot::Ready(Box::new(d))
                }
                Err(why) => {
                    tracing::error!(schema_id = id, table = data_type.table_name(), error = %why, "writer schema incompatible with the table");
                    DecoderSlot::Incompatible(why)
                }
            },
        )
    }

    /// Evolves the table if `writer` adds fields the reader schema lacks and can read
    /// everything written before; returns the refusal if it adds fields but cannot.
    fn evolve(
        &mut self,
        data_type: DataType,
        id: u32,
        writer: &str,
        out: &mut Vec<Decoded>,
    ) -> Result<Option<DecoderSlot>, DecodingError> {
        let reader = self.table(data_type)?.reader.clone();
        let added = added_fields(&reader, writer);
        if added.is_empty() {
            return Ok(None);
        }
        if let Err(e) = check_backward("the table's current schema", &reader, writer) {
            let why = format!("adds fields {added:?} but cannot read earlier records: {e}");
            tracing::error!(schema_id = id, table = data_type.table_name(), error = %why, "writer schema refused");
            return Ok(Some(DecoderSlot::Incompatible(why)));
        }
        let avro = match apache_avro::Schema::parse_str(writer) {
            Ok(a) => a,
            Err(e) => return Ok(Some(DecoderSlot::Incompatible(e.to_string()))),
        };
        tracing::info!(schema_id = id, table = data_type.table_name(), fields = ?added, "newer writer schema: evolving the table");
        // Rows decoded so far leave in the old layout; the writer pads them.
        self.flush(out)?;
        let table = self
            .runtime
            .block_on(evolve_table(self.catalog.as_ref(), data_type, &avro))?;
        let layout =
            TableLayout::from_schema(data_type, table.metadata().current_schema().clone())?;
        self.add_table(data_type, layout, writer);
        let ids: Vec<u32> = self
            .decoders
            .keys()
            .filter(|(dt, _)| *dt == data_type)
            .map(|(_, id)| *id)
            .collect();
        for other in ids {
            if let Some(w) = self.writer_schema(other) {
                let slot = self.build_decoder(data_type, other, &w)?;
                self.decoders.insert((data_type, other), slot);
            }
        }
        Ok(None)
    }
}

/// Names of top-level fields in `writer` that `reader` does not have.
fn added_fields(reader: &str, writer: &str) -> Vec<String> {
    let names = |text: &str| -> Vec<String> {
        serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| {
                v["fields"].as_array().map(|fs| {
                    fs.iter()
                        .filter_map(|f| f["name"].as_str().map(str::to_string))
                        .collect()
                })
            })
            .unwrap_or_default()
    };
    let known = names(reader);
    names(writer)
        .into_iter()
        .filter(|n| !known.contains(n))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k2_common::schema::BuiltinSchema;

    use super::*;
    use crate::stages::test_support::{TOPIC, catalog, trade};

    fn record<'a>(topic: &Arc<str>, offset: i64, value: &'a [u8]) -> RawRecord<'a> {
        RawRecord {
            topic: topic.clone(),
            partition: 0,
            offset,
            timestamp_ms: None,
            key: Some(b"BHP"),
            value,
        }
    }

    #[test]
    fn rows_leave_in_batches_per_writer_schema_and_bad_records_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let trade_schema = BuiltinSchema::for_data_type(DataType::Trades);
        let layout = TableLayout::new(DataType::Trades, &trade_schema.parse()).unwrap();
        let mut decoding = Decoding::new(
            SchemaSource::Local(BTreeMap::from([(1, trade_schema.text.to_string())])),
            catalog(dir.path(), &rt),
            rt.handle().clone(),
        )
        .with_batch_rows(2);
        decoding.add_table(DataType::Trades, layout, trade_schema.text);
        let topic: Arc<str> = Arc::from(TOPIC);
        let mut out = Vec::new();
        let good = trade("BHP", 1, 40);
        let push = |d: &mut Decoding, offset, value: &[u8], out: &mut Vec<Decoded>| {
            d.push(DataType::Trades, &record(&topic, offset, value), true, out)
                .unwrap()
        };
        assert!(matches!(
            push(&mut decoding, 0, &good, &mut out),
            Pushed::Accepted
        ));
        assert!(out.is_empty(), "one row waits for its batch");
        let Pushed::Rejected(r) = push(&mut decoding, 1, &[0, 0, 0], &mut out) else {
            panic!("a truncated header is rejected at once");
        };
        assert_eq!((r.source.offset, r.kind), (1, "bad_magic_byte"));
        push(&mut decoding, 2, &good, &mut out);
        assert_eq!(out.len(), 1, "two rows make a batch");
        assert_eq!(out[0].rows.as_ref().unwrap().batch.num_rows(), 2);
        push(&mut decoding, 3, &good, &mut out);
        decoding.flush(&mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].rows.as_ref().unwrap().batch.num_rows(), 1);
        // A trades topic without a value is poison, not a tombstone.
        assert!(matches!(
            decoding
                .push(DataType::Trades, &record(&topic, 4, &[]), false, &mut out)
                .unwrap(),
            Pushed::Rejected(r) if r.kind == "missing_value"
        ));
    }
}
