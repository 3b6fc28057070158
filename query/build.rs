//! Lets K2's binaries find the prebuilt libduckdb.so at run time (rpath to the directory
//! it was linked from; see .cargo/config.toml and scripts/bootstrap), and tells the query
//! library where scripts/bootstrap put DuckDB's extensions beside it.
fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    if let Some(dir) = std::env::var_os("DUCKDB_LIB_DIR") {
        let dir = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.into());
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
        println!(
            "cargo:rustc-env=K2_DUCKDB_EXTENSION_DIR={}",
            dir.join("extensions").display()
        );
    }
}
