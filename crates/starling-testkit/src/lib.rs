//! What starling's integration tests share: the project's Python and the shared data
//! (`../shared/data`), each found, or skipped with a printed reason — and required where CI says so.
//!
//! A dev-dependency only; it depends on nothing, so any crate's tests can use it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the folder holding `crates/`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The project's Python (`$STARLING_PYTHON`, else the workspace's `.venv/bin/python`) if it imports
/// every module in `modules`; `None` after printing why the caller skips. Panics when `CI` is set:
/// `scripts/setup.sh` installs them, so a CI without them is broken, not to be skipped.
pub fn python_with(modules: &[&str]) -> Option<PathBuf> {
    let p = std::env::var_os("STARLING_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv/bin/python"));
    let ok = Command::new(&p)
        .args(["-c", &format!("import {}", modules.join(", "))])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(p);
    }
    let what = format!("{} with {}", p.display(), modules.join(" and "));
    assert!(
        std::env::var("CI").is_err(),
        "{what} is required in CI (scripts/setup.sh installs them)"
    );
    eprintln!("skipping: no {what} (run scripts/setup.sh)");
    None
}

/// `sub` below the shared data folder (`../shared/data` beside the workspace) if it exists; `None`
/// after printing why the caller skips. Panics when `STARLING_REQUIRE_SHARED=1`.
pub fn shared_data(sub: &str) -> Option<PathBuf> {
    let p = workspace().join("../shared/data").join(sub);
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var("STARLING_REQUIRE_SHARED").as_deref() != Ok("1"),
        "{} is missing and STARLING_REQUIRE_SHARED=1",
        p.display()
    );
    eprintln!("skipping: {} not found (shared data absent)", p.display());
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_holds_the_crates() {
        assert!(workspace()
            .join("crates/starling-testkit/Cargo.toml")
            .is_file());
    }

    #[test]
    fn a_missing_shared_folder_is_a_skip_unless_required() {
        if std::env::var("STARLING_REQUIRE_SHARED").as_deref() == Ok("1") {
            return;
        }
        assert_eq!(shared_data("no-such-dataset-here"), None);
    }
}
