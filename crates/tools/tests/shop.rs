//! The demo shop's file opened by several processes at once (workers and servers starting
//! together on one data directory): every one of them gets the shop, seeded once, instead of
//! "database is locked" while another switches the new file to WAL and makes its tables.

#![allow(clippy::unwrap_used)]

use keel_tools::shop::Shop;
use std::process::Command;

/// Set in the children this test spawns: the shop file to open.
const CHILD: &str = "KEEL_TEST_SHOP_OPENER";

#[test]
fn processes_racing_to_open_a_new_shop_file_all_get_it() {
    if let Ok(path) = std::env::var(CHILD) {
        // A child: open, count, report.
        match Shop::open(&path).and_then(|s| s.count("orders")) {
            Ok(n) => println!("orders={n}"),
            Err(e) => println!("failed: {e}"),
        }
        return;
    }
    let me = std::env::current_exe().unwrap();
    for round in 0..15 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shop.db");
        let children: Vec<_> = (0..8)
            .map(|_| {
                Command::new(&me)
                    .args([
                        "--exact",
                        "processes_racing_to_open_a_new_shop_file_all_get_it",
                        "--nocapture",
                        "--test-threads",
                        "1",
                    ])
                    .env(CHILD, &path)
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap();
            assert!(out.contains("orders=50"), "round {round}: {out}");
        }
    }
}
