//! The decoder: Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro body)
//! straight into Arrow record batches with arrow-avro.
//!
//! arrow-avro's streaming decoder appends a record field by field, so a malformed body
//! leaves a half-written row behind. Each decoder therefore serves one writer schema id
//! (no schema switches inside a batch), every message must decode to exactly one record
//! using all its bytes, and on any anomaly the decoder is rebuilt and the good records of
//! the batch are replayed from a byte arena. Errors are rare; the common path copies each
//! message once into the arena and decodes it once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};

use k2_common::registry::{RegistryError, SchemaRegistryClient};

/// Confluent wire-format magic byte.
pub const MAGIC: u8 = 0;
const HEADER_LEN: usize = 5;
/// Rows per decoded batch.
pub const DECODE_BATCH_ROWS: usize = 8192;

/// Why a record could not be decoded; becomes the dead letter's error kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeErrorKind {
    MissingValue,
    BadMagic,
    UnknownSchemaId,
    IncompatibleSchema,
    Undecodable,
}

impl DecodeErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeErrorKind::MissingValue => "missing_value",
            DecodeErrorKind::BadMagic => "bad_magic_byte",
            DecodeErrorKind::UnknownSchemaId => "unknown_schema_id",
            DecodeErrorKind::IncompatibleSchema => "incompatible_schema",
            DecodeErrorKind::Undecodable => "undecodable_body",
        }
    }
}

/// Reads the wire-format header: the writer schema id.
pub fn schema_id(value: Option<&[u8]>) -> Result<u32, (DecodeErrorKind, String)> {
    let value = value.ok_or((
        DecodeErrorKind::MissingValue,
        "record has no value".to_string(),
    ))?;
    if value.len() < HEADER_LEN {
        return Err((
            DecodeErrorKind::BadMagic,
            format!(
                "value is {} bytes, shorter than the 5-byte wire-format header",
                value.len()
            ),
        ));
    }
    if value[0] != MAGIC {
        return Err((
            DecodeErrorKind::BadMagic,
            format!(
                "magic byte is {:#04x}, expected 0x00 (Confluent wire format)",
                value[0]
            ),
        ));
    }
    Ok(u32::from_be_bytes(value[1..5].try_into().expect("4 bytes")))
}

/// Where writer schemas come from: the Schema Registry, or ids assigned in the config.
#[derive(Debug, Clone)]
pub enum SchemaSource {
    Registry(SchemaRegistryClient),
    Local(BTreeMap<u32, String>),
}

impl SchemaSource {
    /// The registry if one is configured, else the ids the config assigns to schema files
    /// (read now; the error names the key and the file).
    pub fn from_config(config: &k2_common::K2Config) -> Result<Self, String> {
        if let Some(r) = &config.schema_registry {
            return Ok(SchemaSource::Registry(SchemaRegistryClient::new(r)));
        }
        let mut map = BTreeMap::new();
        for (id, path) in config.schemas.ids() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("schemas.ids.{id}: cannot read {}: {e}", path.display()))?;
            map.insert(id, text);
        }
        Ok(SchemaSource::Local(map))
    }
}

/// Writer schemas by id, fetched once and cached.
#[derive(Debug)]
pub struct WriterSchemas {
    source: SchemaSource,
    cache: HashMap<u32, Option<Arc<str>>>,
}

impl WriterSchemas {
    pub fn new(source: SchemaSource) -> Self {
        WriterSchemas {
            source,
            cache: HashMap::new(),
        }
    }

    /// The writer schema with this id, `None` if the id is unknown. Transient registry
    /// failures are errors (the caller retries); a 404 is a definite "unknown".
    pub async fn get(&mut self, id: u32) -> Result<Option<Arc<str>>, RegistryError> {
        if let Some(s) = self.cache.get(&id) {
            return Ok(s.clone());
        }
        let found: Option<Arc<str>> = match &self.source {
            SchemaSource::Local(map) => map.get(&id).map(|s| Arc::from(s.as_str())),
            SchemaSource::Registry(client) => match client.schema_by_id(id).await {
                Ok(s) => Some(Arc::from(s)),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e),
            },
        };
        self.cache.insert(id, found.clone());
        Ok(found)
    }
}

/// Where a decoded row came from, and its original bytes (for dead letters).
#[derive(Debug, Clone)]
pub struct RowSource {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    key: Option<(usize, usize)>,
    value: (usize, usize),
}

/// Rows of one decoded batch with their original key/value bytes.
#[derive(Debug, Default)]
pub struct RowSources {
    arena: Vec<u8>,
    rows: Vec<RowSource>,
}

impl RowSources {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn get(&self, i: usize) -> &RowSource {
        &self.rows[i]
    }

    pub fn iter(&self) -> impl Iterator<Item = &RowSource> {
        self.rows.iter()
    }

    pub fn key(&self, row: &RowSource) -> Option<&[u8]> {
        row.key.map(|(s, e)| &self.arena[s..e])
    }

    pub fn value(&self, row: &RowSource) -> &[u8] {
        &self.arena[row.value.0..row.value.1]
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity() + self.rows.capacity() * size_of::<RowSource>()
    }

    fn push(&mut self, rec: &RawRecord<'_>) {
        let key = rec.key.map(|k| {
            let s = self.arena.len();
            self.arena.extend_from_slice(k);
            (s, self.arena.len())
        });
        let s = self.arena.len();
        self.arena.extend_from_slice(rec.value);
        self.rows.push(RowSource {
            topic: rec.topic.clone(),
            partition: rec.partition,
            offset: rec.offset,
            timestamp_ms: rec.timestamp_ms,
            key,
            value: (s, self.arena.len()),
        });
    }
}

/// A Kafka record as the decode stage sees it.
#[derive(Debug, Clone)]
pub struct RawRecord<'a> {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
}

/// A record the decoder rejected, with its bytes.
#[derive(Debug)]
pub struct Rejected {
    pub source: RowSource,
    pub key: Option<Vec<u8>>,
    /// `None` for a record without a value (a tombstone).
    pub value: Option<Vec<u8>>,
    /// Error kind, e.g. `undecodable_body` or `invalid_price`.
    pub kind: &'static str,
    pub message: String,
}

impl Rejected {
    /// A record rejected before decoding (bad header, unknown or incompatible schema).
    /// `has_value` is false for a record that had no value at all.
    pub fn raw(rec: &RawRecord<'_>, has_value: bool, kind: &'static str, message: String) -> Self {
        Rejected {
            source: RowSource {
                topic: rec.topic.clone(),
                partition: rec.partition,
                offset: rec.offset,
                timestamp_ms: rec.timestamp_ms,
                key: None,
                value: (0, 0),
            },
            key: rec.key.map(<[u8]>::to_vec),
            value: has_value.then(|| rec.value.to_vec()),
            kind,
            message,
        }
    }
}

/// A decoded batch (in the reader schema) and the source of each row.
#[derive(Debug)]
pub struct DecodedBatch {
    pub batch: RecordBatch,
    pub sources: RowSources,
}

/// Decodes records of one writer schema id into the table's reader schema.
pub struct SchemaDecoder {
    schema_id: u32,
    store: SchemaStore,
    reader_schema: AvroSchema,
    decoder: Decoder,
    pending: RowSources,
    batch_rows: usize,
}

impl std::fmt::Debug for SchemaDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaDecoder")
            .field("schema_id", &self.schema_id)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl SchemaDecoder {
    /// Fails if the writer schema cannot be resolved against the reader schema (e.g. it
    /// lacks a field the reader requires and has no default for).
    pub fn new(
        schema_id: u32,
        writer_schema: &str,
        reader_schema: &str,
        batch_rows: usize,
    ) -> Result<Self, String> {
        let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
        store
            .set(
                Fingerprint::Id(schema_id),
                AvroSchema::new(writer_schema.to_string()),
            )
            .map_err(|e| e.to_string())?;
        let reader_schema = AvroSchema::new(reader_schema.to_string());
        let decoder = build(&store, &reader_schema, schema_id, batch_rows)?;
        Ok(SchemaDecoder {
            schema_id,
            store,
            reader_schema,
            decoder,
            pending: RowSources::default(),
            batch_rows,
        })
    }

    pub fn schema_id(&self) -> u32 {
        self.schema_id
    }

    pub fn is_full(&self) -> bool {
        self.decoder.batch_is_full()
    }

    pub fn pending_rows(&self) -> usize {
        self.pending.len()
    }

    /// Decodes one record (its value must carry this decoder's schema id). On failure the
    /// decoder is restored to the state before the call and the reason is returned.
    pub fn push(&mut self, rec: &RawRecord<'_>) -> Result<(), String> {
        debug_assert!(!self.is_full(), "flush a full decoder before pushing");
        let capacity = self.decoder.capacity();
        let outcome = self.decoder.decode(rec.value);
        let decoded_one = self.decoder.capacity() + 1 == capacity;
        let reason = match outcome {
            Ok(n) if n == rec.value.len() && decoded_one => {
                self.pending.push(rec);
                return Ok(());
            }
            Ok(_) if decoded_one => "trailing bytes after the Avro record".to_string(),
            Ok(_) => "truncated Avro body".to_string(),
            Err(e) => e.to_string(),
        };
        self.replay_pending()?;
        Err(reason)
    }

    /// The rows decoded so far as a batch, plus any records that turned out bad only at
    /// flush (arrow validates whole arrays then, e.g. UTF-8 of strings).
    pub fn flush(&mut self) -> Result<(Option<DecodedBatch>, Vec<Rejected>), String> {
        if self.pending.is_empty() {
            return Ok((None, Vec::new()));
        }
        let sources = std::mem::take(&mut self.pending);
        match self.decoder.flush() {
            Ok(Some(batch)) => Ok((Some(DecodedBatch { batch, sources }), Vec::new())),
            Ok(None) => Err("decoder lost its rows".into()),
            Err(_) => self.isolate(sources),
        }
    }

    /// Rare path: decode each record alone to find those that fail at flush.
    fn isolate(
        &mut self,
        sources: RowSources,
    ) -> Result<(Option<DecodedBatch>, Vec<Rejected>), String> {
        self.decoder = build(
            &self.store,
            &self.reader_schema,
            self.schema_id,
            self.batch_rows,
        )?;
        let mut good = Vec::new();
        let mut good_sources = RowSources::default();
        let mut rejected = Vec::new();
        for row in sources.iter() {
            let rec = RawRecord {
                topic: row.topic.clone(),
                partition: row.partition,
                offset: row.offset,
                timestamp_ms: row.timestamp_ms,
                key: sources.key(row),
                value: sources.value(row),
            };
            let result = self
                .decoder
                .decode(rec.value)
                .map_err(|e| e.to_string())
                .and_then(|_| self.decoder.flush().map_err(|e| e.to_string()));
            match result {
                Ok(Some(b)) => {
                    good.push(b);
                    good_sources.push(&rec);
                }
                Ok(None) => unreachable!("one record was decoded"),
                Err(message) => {
                    self.decoder = build(
                        &self.store,
                        &self.reader_schema,
                        self.schema_id,
                        self.batch_rows,
                    )?;
                    rejected.push(Rejected {
                        source: row.clone(),
                        key: rec.key.map(<[u8]>::to_vec),
                        value: Some(rec.value.to_vec()),
                        kind: DecodeErrorKind::Undecodable.as_str(),
                        message,
                    });
                }
            }
        }
        if good.is_empty() {
            return Ok((None, rejected));
        }
        let batch =
            arrow::compute::concat_batches(&good[0].schema(), &good).map_err(|e| e.to_string())?;
        Ok((
            Some(DecodedBatch {
                batch,
                sources: good_sources,
            }),
            rejected,
        ))
    }

    /// Rebuilds the decoder and decodes the pending (known good) records again.
    fn replay_pending(&mut self) -> Result<(), String> {
        self.decoder = build(
            &self.store,
            &self.reader_schema,
            self.schema_id,
            self.batch_rows,
        )?;
        for row in self.pending.iter() {
            let value = self.pending.value(row);
            match self.decoder.decode(value) {
                Ok(n) if n == value.len() => {}
                other => {
                    return Err(format!(
                        "replaying a record that decoded before failed: {other:?}"
                    ));
                }
            }
        }
        Ok(())
    }
}

fn build(
    store: &SchemaStore,
    reader_schema: &AvroSchema,
    schema_id: u32,
    batch_rows: usize,
) -> Result<Decoder, String> {
    ReaderBuilder::new()
        .with_batch_size(batch_rows)
        .with_reader_schema(reader_schema.clone())
        .with_writer_schema_store(store.clone())
        .with_active_fingerprint(Fingerprint::Id(schema_id))
        .build_decoder()
        .map_err(|e| e.to_string())
}
