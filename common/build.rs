//! Stamps the build with its commit (`K2_COMMIT`, shown as `k2_build_info{commit}` and by
//! `--version`): `K2_GIT_COMMIT` if set (image builds without a `.git`), else `git
//! rev-parse`, else "unknown".
fn main() {
    let commit = std::env::var("K2_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            std::process::Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=K2_COMMIT={commit}");
    println!("cargo:rerun-if-env-changed=K2_GIT_COMMIT");
    // A commit moves the branch's ref (or HEAD itself when detached).
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/refs/heads");
}
