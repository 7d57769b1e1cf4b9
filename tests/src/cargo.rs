//! Building the `ferry` binary from inside a test or the benchmark.

use std::process::Command;

/// A `cargo` command for building from inside a process that cargo started.
///
/// Cargo gives such a process variables about *its* package (CARGO_PKG_NAME,
/// ...). Build scripts (ring's) declare `rerun-if-env-changed` on some of
/// them, and cargo compares its own environment: left in, they would make
/// this build, and the next ordinary one, rebuild ring and everything above
/// it, each time. They are removed here.
pub fn cargo() -> Command {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (key, _) in std::env::vars_os() {
        let key_str = key.to_string_lossy();
        if key_str.starts_with("CARGO_PKG_")
            || key_str.starts_with("CARGO_MANIFEST_")
            || key_str.starts_with("CARGO_BIN_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&key_str.as_ref())
        {
            cargo.env_remove(&key);
        }
    }
    cargo
}
