//! Writing manifests must not grow the process: a sink writes manifest entries with every
//! commit, and its merges rewrite them, for months. iceberg-rust 0.10.1 leaked a copy of
//! the partition field's name for every entry it wrote (third_party/README.md). This test
//! counts the bytes still allocated after identical manifests are written and dropped, in
//! a binary of its own so that nothing else allocates beside it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use iceberg::io::FileIO;
use iceberg::spec::{
    DataContentType, DataFileBuilder, DataFileFormat, Literal, ManifestWriterBuilder, Struct,
};
use k2_table::layout::TableLayout;

/// The system allocator, counting the bytes it has handed out and not had back.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ENTRIES: usize = 5_000;

/// One manifest of `ENTRIES` day-partitioned data files, as the sink writes them; written
/// to memory, then deleted.
async fn write_one(io: &FileIO, layout: &TableLayout, round: usize) {
    let spec = layout
        .partition_spec
        .clone()
        .bind(layout.schema.clone())
        .expect("the layout's spec binds to its schema");
    let path = format!("memory://m/{round}.avro");
    let mut writer = ManifestWriterBuilder::new(
        io.new_output(&path).unwrap(),
        Some(1),
        layout.schema.clone(),
        spec.clone(),
    )
    .build_v2_data();
    // The partition as the sink records it: the day, then the exchange.
    let partition =
        || Struct::from_iter([Some(Literal::date(20_000)), Some(Literal::string("asx"))]);
    for n in 0..ENTRIES {
        let file = DataFileBuilder::default()
            .content(DataContentType::Data)
            .file_path(format!("memory://d/{round}-{n}.parquet"))
            .file_format(DataFileFormat::Parquet)
            .partition(partition())
            .partition_spec_id(spec.spec_id())
            .record_count(1)
            .file_size_in_bytes(1)
            .build()
            .unwrap();
        writer.add_file(file, 1).unwrap();
    }
    writer.write_manifest_file().await.unwrap();
    io.delete(&path).await.unwrap();
}

#[test]
fn writing_manifests_leaves_nothing_behind() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let io = FileIO::new_with_memory();
    let layout = TableLayout::sequence_events().unwrap();
    assert!(layout.day_partitioned, "the test needs a partitioned table");
    // A first round for what is allocated once (lazy statics, caches).
    rt.block_on(write_one(&io, &layout, 0));
    let before = LIVE.load(Ordering::SeqCst);
    for round in 1..=3 {
        rt.block_on(write_one(&io, &layout, round));
    }
    let grown = LIVE.load(Ordering::SeqCst) - before;
    // The leak was a copy of each partition field's name per entry: 450 kB here.
    assert!(
        grown < 16 * 1024,
        "{grown} bytes still allocated after writing 3 × {ENTRIES} manifest entries"
    );
}
