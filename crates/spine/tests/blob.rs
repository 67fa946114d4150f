//! The `BlobStore` contract on every backend: a local directory, the SQLite spine's file (small
//! blobs inline, the rest in a directory) and an S3-compatible bucket on a
//! real server (moto, started by the test from `$KEEL_TEST_MOTO_BIN`): content addressing, dedup,
//! verify on read (a corrupted object is refused), clear errors, deletion for erasure, concurrent
//! puts. Each check is one `async fn` over `&dyn BlobStore`, run against each backend.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use keel_spine::{
    BlobRef, BlobStore, LocalBlobStore, S3BlobStore, S3Options, SpineError, SqliteLog,
    SqliteOptions,
};
use keel_testkit::s3::{ACCESS_KEY_ID, MotoServer, SECRET_ACCESS_KEY};
use object_store::ObjectStoreExt;
use std::sync::Arc;
use std::time::Duration;

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p))
        } else {
            out.push(p)
        }
    }
    out
}

/// Overwrites the bytes stored under a reference behind the store's back.
type Corrupt =
    Box<dyn Fn(&BlobRef, &[u8]) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// One backend under test: the store, how to corrupt a blob, how many objects it holds.
struct Backend {
    store: Arc<dyn BlobStore>,
    corrupt: Corrupt,
    count: Box<dyn Fn() -> futures::future::BoxFuture<'static, usize> + Send + Sync>,
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

fn local() -> Backend {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let root = dir.path().to_owned();
    let store = LocalBlobStore::new(&root);
    let (c_root, n_root) = (root.clone(), root.clone());
    Backend {
        store: Arc::new(store),
        corrupt: Box::new(move |r, bytes| {
            let hex = r.as_str().trim_start_matches("sha256:").to_owned();
            let (head, tail) = hex.split_at_checked(2).unwrap();
            let path = c_root.join("sha256").join(head).join(tail);
            let bytes = bytes.to_vec();
            Box::pin(async move { std::fs::write(path, bytes).unwrap() })
        }),
        count: Box::new(move || {
            let n = files_under(&n_root.join("sha256")).len();
            Box::pin(async move { n })
        }),
        _keep: Box::new(dir),
    }
}

/// The SQLite spine's store: blobs up to 64 KiB in the spine's file, larger ones in a directory.
fn spine_inline() -> Backend {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let root = dir.path().to_owned();
    let db = root.join("spine.db");
    let log = SqliteLog::open(&db, SqliteOptions::default()).unwrap();
    let files: Arc<dyn BlobStore> = Arc::new(LocalBlobStore::new(root.join("blobs")));
    let store = keel_spine::sqlite::inline_small_blobs(Some(&db), files);
    let (c_db, n_db, n_root) = (db.clone(), db.clone(), root.clone());
    Backend {
        store,
        corrupt: Box::new(move |r, bytes| {
            let conn = rusqlite::Connection::open(&c_db).unwrap();
            let n = conn
                .execute(
                    "UPDATE inline_blobs SET bytes = ?1 WHERE ref = ?2",
                    rusqlite::params![bytes, r.as_str()],
                )
                .unwrap();
            assert_eq!(n, 1, "the small blob is a row of the spine's file");
            Box::pin(async {})
        }),
        count: Box::new(move || {
            let conn = rusqlite::Connection::open(&n_db).unwrap();
            let rows: usize = conn
                .query_row("SELECT count(*) FROM inline_blobs", [], |r| r.get(0))
                .unwrap();
            let n = rows + files_under(&n_root.join("blobs").join("sha256")).len();
            Box::pin(async move { n })
        }),
        _keep: Box::new((dir, log)),
    }
}

fn s3_options(server: &MotoServer, bucket: &str) -> S3Options {
    S3Options {
        bucket: bucket.into(),
        prefix: "keel/blobs".into(),
        endpoint: Some(server.endpoint()),
        region: "us-east-1".into(),
        access_key_id: ACCESS_KEY_ID.into(),
        secret_access_key: SECRET_ACCESS_KEY.into(),
        session_token: None,
        timeout: Duration::from_secs(10),
    }
}

/// The raw bucket, to write around the store.
fn raw(server: &MotoServer, bucket: &str) -> Arc<object_store::aws::AmazonS3> {
    Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_endpoint(server.endpoint())
            .with_allow_http(true)
            .with_access_key_id(ACCESS_KEY_ID)
            .with_secret_access_key(SECRET_ACCESS_KEY)
            .build()
            .unwrap(),
    )
}

fn s3() -> Backend {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = MotoServer::start();
    let bucket = "keel-blobs";
    server.create_bucket(bucket);
    let store = S3BlobStore::new(&s3_options(&server, bucket)).unwrap();
    let (raw_c, raw_n) = (raw(&server, bucket), raw(&server, bucket));
    let key_store = store.clone();
    Backend {
        store: Arc::new(store),
        corrupt: Box::new(move |r, bytes| {
            let raw = raw_c.clone();
            let key = object_store::path::Path::from(key_store.key_of(r));
            let bytes = bytes.to_vec();
            Box::pin(async move {
                raw.put(&key, bytes.into()).await.unwrap();
            })
        }),
        count: Box::new(move || {
            let raw = raw_n.clone();
            Box::pin(async move {
                use futures::StreamExt;
                let prefix = object_store::path::Path::from("keel/blobs");
                object_store::ObjectStore::list(&*raw, Some(&prefix))
                    .collect::<Vec<_>>()
                    .await
                    .len()
            })
        }),
        _keep: Box::new(server),
    }
}

async fn put_then_get_round_trips_and_dedups(b: &Backend) {
    let store = &b.store;
    let bytes = br#"{"order_id":"A-1001","status":"shipped"}"#.to_vec();
    let r = store.put(bytes.clone()).await.unwrap();
    assert_eq!(r.as_str(), BlobRef::of(&bytes).as_str());
    assert!(r.as_str().starts_with("sha256:") && r.as_str().len() == 71);
    assert_eq!(store.get(&r).await.unwrap(), bytes);
    assert_eq!(store.put(bytes.clone()).await.unwrap(), r);
    assert_eq!(
        (b.count)().await,
        1,
        "one object per content, nothing else left"
    );
    // An empty blob is a blob too.
    let empty = store.put(Vec::new()).await.unwrap();
    assert_eq!(store.get(&empty).await.unwrap(), Vec::<u8>::new());
}

async fn corrupted_blob_is_refused_on_read(b: &Backend) {
    let r = b.store.put(b"refund approved".to_vec()).await.unwrap();
    (b.corrupt)(&r, b"refund approvef").await;
    match b.store.get(&r).await {
        Err(SpineError::BlobCorrupt {
            reference, actual, ..
        }) => {
            assert_eq!(reference, r.to_string());
            assert_eq!(
                format!("sha256:{actual}"),
                BlobRef::of(b"refund approvef").to_string()
            );
        }
        other => panic!("expected BlobCorrupt, got {other:?}"),
    }
}

async fn missing_blob_and_bad_reference_are_clear_errors(b: &Backend) {
    let absent = BlobRef::of(b"never stored");
    assert!(matches!(
        b.store.get(&absent).await,
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

async fn delete_removes_the_blob_once(b: &Backend) {
    let keep = b
        .store
        .put(b"another subject's receipt".to_vec())
        .await
        .unwrap();
    let r = b
        .store
        .put(b"cust-42's refund receipt".to_vec())
        .await
        .unwrap();
    assert!(
        b.store.delete(&r).await.unwrap(),
        "the first delete finds it"
    );
    assert!(!b.store.delete(&r).await.unwrap(), "the second does not");
    assert!(matches!(
        b.store.get(&r).await,
        Err(SpineError::BlobNotFound(_))
    ));
    assert_eq!(
        b.store.get(&keep).await.unwrap(),
        b"another subject's receipt"
    );
}

async fn concurrent_puts_of_the_same_content_agree(b: &Backend) {
    let puts = (0..16).map(|_| {
        let s = b.store.clone();
        tokio::spawn(async move { s.put(vec![7u8; 100_000]).await.unwrap() })
    });
    let refs = futures::future::join_all(puts).await;
    assert!(
        refs.iter()
            .all(|r| r.as_ref().unwrap() == refs[0].as_ref().unwrap())
    );
    assert_eq!((b.count)().await, 1);
    assert_eq!(
        b.store.get(refs[0].as_ref().unwrap()).await.unwrap(),
        vec![7u8; 100_000]
    );
}

/// Runs every check on a fresh store of each backend.
macro_rules! blob_contract {
    ($($check:ident),* $(,)?) => {
        mod local_dir {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(&super::local()).await;
                }
            )*
        }
        mod spine_inline {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(&super::spine_inline()).await;
                }
            )*
        }
        mod s3_moto {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let b = tokio::task::spawn_blocking(super::s3).await.unwrap();
                    super::$check(&b).await;
                }
            )*
        }
    };
}

blob_contract!(
    put_then_get_round_trips_and_dedups,
    corrupted_blob_is_refused_on_read,
    missing_blob_and_bad_reference_are_clear_errors,
    delete_removes_the_blob_once,
    concurrent_puts_of_the_same_content_agree,
);

/// A wrong endpoint is an error naming the bucket, not a hang, and never shows the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_a_clear_error_without_the_secret() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = S3BlobStore::new(&S3Options {
        bucket: "nowhere".into(),
        prefix: String::new(),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: "us-east-1".into(),
        access_key_id: ACCESS_KEY_ID.into(),
        secret_access_key: SECRET_ACCESS_KEY.into(),
        session_token: None,
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    let err = store.check().await.unwrap_err().to_string();
    assert!(err.contains("s3://nowhere"), "{err}");
    assert!(!err.contains(SECRET_ACCESS_KEY), "{err}");
    let dbg = format!("{store:?}");
    assert!(!dbg.contains(SECRET_ACCESS_KEY), "{dbg}");
}
