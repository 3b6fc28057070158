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
