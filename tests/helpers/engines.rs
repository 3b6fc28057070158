//! The trades table as other Iceberg implementations read it — DuckDB's `iceberg_scan` and
//! PyIceberg, independent of K2's reading code and of iceberg-rust — so interoperability is
//! checked on what the sink and maintenance wrote: (rows, sum of `kafka_offset`).

use crate::{TestEnv, tables};

/// Which snapshot of the trades table to read.
#[derive(Debug, Clone, Copy)]
pub enum At<'a> {
    Current,
    Snapshot(i64),
    /// A ref by name (PyIceberg only: DuckDB's reader takes snapshot ids).
    Tag(&'a str),
}

/// What DuckDB's `iceberg_scan` finds in the trades table's current metadata file.
pub fn duckdb_reads(env: &TestEnv, at: At) -> (i64, i64) {
    let metadata = crate::runtime().block_on(async {
        let catalog = tables::catalog(env).await;
        let table = catalog
            .load_table(&k2_table::layout::ident("trades"))
            .await
            .unwrap();
        table.metadata_location().unwrap().to_string()
    });
    let extensions = crate::repo_root().join(".k2/duckdb/extensions");
    let conn = duckdb::Connection::open_in_memory().unwrap();
    conn.execute_batch(&format!(
        "SET extension_directory = '{}'; SET autoinstall_known_extensions = false; \
         LOAD avro; LOAD iceberg;",
        extensions.display()
    ))
    .unwrap_or_else(|e| panic!("DuckDB's iceberg extension (scripts/bootstrap fetches it): {e}"));
    let at = match at {
        At::Current => String::new(),
        At::Snapshot(s) => format!(", snapshot_from_id => {s}"),
        At::Tag(t) => panic!("iceberg_scan reads snapshot ids, not the ref {t}"),
    };
    conn.query_row(
        &format!(
            "SELECT count(*), coalesce(sum(kafka_offset), 0)::BIGINT \
             FROM iceberg_scan('{}'{at})",
            metadata.trim_start_matches("file://")
        ),
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// What PyIceberg finds in the trades table, through the same SQL catalog.
pub fn pyiceberg_reads(env: &TestEnv, at: At) -> (i64, i64) {
    let script = r#"
import sys
from pyiceberg.catalog.sql import SqlCatalog
db, warehouse, kind, at = sys.argv[1:5]
catalog = SqlCatalog("k2", uri=f"sqlite:///{db}", warehouse=warehouse)
table = catalog.load_table("market_data.trades")
if kind == "snapshot":
    scan = table.scan(snapshot_id=int(at))
elif kind == "tag":
    scan = table.scan(snapshot_id=table.snapshot_by_name(at).snapshot_id)
else:
    scan = table.scan()
offsets = scan.to_arrow().column("kafka_offset").to_pylist()
print(len(offsets), sum(offsets))
"#;
    let (kind, at) = match at {
        At::Current => ("current", String::new()),
        At::Snapshot(s) => ("snapshot", s.to_string()),
        At::Tag(t) => ("tag", t.to_string()),
    };
    let out = std::process::Command::new(crate::registry::python())
        .args([
            "-c",
            script,
            env.dir.path().join("state/catalog.db").to_str().unwrap(),
            &format!(
                "file://{}",
                env.dir.path().join("state/warehouse").display()
            ),
            kind,
            &at,
        ])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "PyIceberg (scripts/bootstrap installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|v| v.parse::<i64>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// PyIceberg appends `rounds` times five rows of its own to the trades table (copies of
/// rows already there, relabelled `kafka_topic = "pyiceberg"`, partition = the round,
/// offsets 0–4), each retried after a commit conflict as a writer beside the sink would.
/// Returns the conflicts it met; panics if a round cannot commit in 50 attempts.
pub fn pyiceberg_appends(env: &TestEnv, rounds: i32) -> usize {
    let script = r#"
import sys, time
import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException
db, warehouse, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
catalog = SqlCatalog("k2", uri=f"sqlite:///{db}", warehouse=warehouse)

def relabel(rows, name, values):
    i = rows.schema.get_field_index(name)
    field = rows.schema.field(i)
    return rows.set_column(i, field, pa.array(values, field.type))

conflicts = 0
for r in range(rounds):
    for attempt in range(50):
        table = catalog.load_table("market_data.trades")
        rows = table.scan(limit=5).to_arrow().slice(0, 5)
        if rows.num_rows < 5:
            time.sleep(0.2)
            continue
        rows = relabel(rows, "kafka_topic", ["pyiceberg"] * 5)
        rows = relabel(rows, "kafka_partition", [r] * 5)
        rows = relabel(rows, "kafka_offset", list(range(5)))
        try:
            table.append(rows)
            break
        except CommitFailedException:
            conflicts += 1
            time.sleep(0.05)
    else:
        sys.exit(f"round {r}: no commit in 50 attempts")
    time.sleep(0.2)
print(conflicts)
"#;
    let out = std::process::Command::new(crate::registry::python())
        .args([
            "-c",
            script,
            env.dir.path().join("state/catalog.db").to_str().unwrap(),
            &format!(
                "file://{}",
                env.dir.path().join("state/warehouse").display()
            ),
            &rounds.to_string(),
        ])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "PyIceberg appending: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}
