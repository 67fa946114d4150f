//! Set-up shared by the server's integration tests: the embedded runtime wired as the demo wires
//! it, with the shop (`data/shop.db`) whose builtins the repository's `tools/` call.

#![allow(clippy::unwrap_used, dead_code)]

use keel_runtime::embedded::{Config, Embedded};
use keel_runtime::replay::Replayer;
use keel_tools::adapter::builtin::Builtins;
use keel_tools::shop::Shop;
use std::path::{Path, PathBuf};

/// The shop under `data` (created and seeded the first time).
pub fn shop(data: &Path) -> Shop {
    std::fs::create_dir_all(data).unwrap();
    Shop::open(data.join("shop.db")).unwrap()
}

/// The embedded runtime under `data` with the shop's builtins.
pub fn open(data: &Path, config: &Config) -> Embedded {
    open_with(data, config, |_| {})
}

/// The embedded runtime under `data` with the shop's builtins and those `more` adds.
pub fn open_with(data: &Path, config: &Config, more: impl FnOnce(&mut Builtins)) -> Embedded {
    let shop = shop(data);
    Embedded::open_with(data, config, |b| {
        *b = shop.builtins();
        more(b);
    })
    .unwrap()
}

/// A replayer of the store under `data`, whose live read-only tools call the shop.
pub fn replayer(data: &Path, config: &Config) -> Replayer {
    let shop = shop(data);
    Replayer::open_with(data, config, |b| *b = shop.builtins()).unwrap()
}

/// The repository's root: the demo's tools, strategies and prices.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}
