//! The local blob store on a real directory: content addressing, atomic writes, verify on read.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use keel_spine::{BlobRef, BlobStore, LocalBlobStore, SpineError};

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p))
        } else {
            out.push(p)
        }
    }
    out
}

#[tokio::test]
async fn put_then_get_round_trips_and_dedups() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::new(dir.path());
    let bytes = br#"{"order_id":"A-1001","status":"shipped"}"#.to_vec();
    let r = store.put(bytes.clone()).await.unwrap();
    assert_eq!(r.as_str(), BlobRef::of(&bytes).as_str());
    assert!(r.as_str().starts_with("sha256:") && r.as_str().len() == 71);
    assert_eq!(store.get(&r).await.unwrap(), bytes);
    assert_eq!(store.put(bytes.clone()).await.unwrap(), r);
    let files = files_under(dir.path());
    assert_eq!(
        files.len(),
        1,
        "one file per content, no temp files left: {files:?}"
    );
    // An empty blob is a blob too.
    let empty = store.put(Vec::new()).await.unwrap();
    assert_eq!(store.get(&empty).await.unwrap(), Vec::<u8>::new());
}

#[tokio::test]
async fn corrupted_blob_is_refused_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::new(dir.path());
    let r = store.put(b"refund approved".to_vec()).await.unwrap();
    let path = files_under(dir.path()).pop().unwrap();
    std::fs::write(&path, b"refund approvef").unwrap();
    match store.get(&r).await {
        Err(SpineError::BlobCorrupt {
            reference, path: p, ..
        }) => {
            assert_eq!(reference, r.to_string());
            assert_eq!(p, path);
        }
        other => panic!("expected BlobCorrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_blob_and_bad_reference_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::new(dir.path());
    let absent = BlobRef::of(b"never stored");
    assert!(matches!(
        store.get(&absent).await,
        Err(SpineError::BlobNotFound(_))
    ));
    for bad in [
        "",
        "sha256:",
        "md5:abc",
        &format!("sha256:{}", "G".repeat(64)),
        &format!("sha256:{}", "A".repeat(64)),
    ] {
        let err = bad.parse::<BlobRef>().unwrap_err();
        assert!(err.to_string().contains("invalid blob reference"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_of_the_same_content_agree() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::new(dir.path());
    let puts = (0..16).map(|_| {
        let s = store.clone();
        tokio::spawn(async move { s.put(vec![7u8; 100_000]).await.unwrap() })
    });
    let refs = futures::future::join_all(puts).await;
    assert!(
        refs.iter()
            .all(|r| r.as_ref().unwrap() == refs[0].as_ref().unwrap())
    );
    assert_eq!(files_under(&dir.path().join("sha256")).len(), 1);
}
