//! The embedded runtime registers only the builtin functions its caller wires: the demo shop is
//! the demo's (its wiring opens `shop.db` and registers the shop's tools), not every runtime's.

#![allow(clippy::unwrap_used)]

mod common;

use keel_runtime::embedded::{Config, Embedded};
use keel_tools::shop::Shop;
use std::path::Path;

fn config(dir: &Path, tools: &[&str]) -> Config {
    let repo = common::repo();
    let folder = dir.join("tools");
    std::fs::create_dir_all(&folder).unwrap();
    for name in tools {
        let file = format!("{name}.yaml");
        std::fs::copy(repo.join("tools").join(&file), folder.join(&file)).unwrap();
    }
    std::fs::create_dir_all(dir.join("strategies")).unwrap();
    Config {
        tools: folder,
        strategies: dir.join("strategies"),
        prices: repo.join("prices.toml"),
    }
}

#[test]
fn a_runtime_without_shop_contracts_opens_no_shop() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    Embedded::open(&data, &config(tmp.path(), &[])).unwrap();
    assert!(data.join("spine.db").exists());
    assert!(
        !data.join("shop.db").exists(),
        "the demo shop is not part of every runtime"
    );
}

#[test]
fn the_shop_tools_exist_only_where_the_demo_wiring_registers_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = config(tmp.path(), &["lookup_order"]);
    let Err(e) = Embedded::open(&data, &config) else {
        panic!("a contract calling the shop's lookup_order opened without the shop's wiring");
    };
    assert!(e.to_string().contains("lookup_order"), "{e}");
    assert!(!data.join("shop.db").exists());

    let shop = Shop::open(tmp.path().join("shop.db")).unwrap();
    Embedded::open_with(&data, &config, |b| *b = shop.builtins()).unwrap();
}
