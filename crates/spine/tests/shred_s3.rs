//! Erasure with blobs on S3-compatible storage (a real moto server from `$KEEL_TEST_MOTO_BIN`): the
//! subject's execution's blob leaves the bucket, another execution's blob stays, and the object is
//! gone from the server itself, not only from the store's view.

#![allow(clippy::unwrap_used)]

use keel_core::payload::{Outcome, Payload, ToolStatus};
use keel_spine::{
    BlobStore, EventLog, S3BlobStore, S3Options, SpineError, SqliteLog, SqliteOptions,
};
use keel_testkit::ExecBuilder;
use keel_testkit::builder::exec_id;
use keel_testkit::s3::{ACCESS_KEY_ID, MotoServer, SECRET_ACCESS_KEY};
use object_store::ObjectStoreExt;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_deletes_the_subjects_blobs_from_the_bucket() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = tokio::task::spawn_blocking(MotoServer::start)
        .await
        .unwrap();
    server.create_bucket("keel");
    let blobs = S3BlobStore::new(&S3Options {
        bucket: "keel".into(),
        prefix: "prod".into(),
        endpoint: Some(server.endpoint()),
        region: "us-east-1".into(),
        access_key_id: ACCESS_KEY_ID.into(),
        secret_access_key: SECRET_ACCESS_KEY.into(),
        session_token: None,
        timeout: Duration::from_secs(10),
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("spine.db"), SqliteOptions::default()).unwrap();

    let mut refs = Vec::new();
    for n in [1u64, 2] {
        let output = blobs
            .put(format!(r#"{{"customer":"Zoltan Quixwright {n}"}}"#).into_bytes())
            .await
            .unwrap();
        let mut events = ExecBuilder::new(exec_id(n), "acme")
            .started("Refund order A-1001 for Zoltan Quixwright")
            .tool_call("lookup_order", ToolStatus::Ok)
            .step_completed()
            .finished(Outcome::Success)
            .build();
        for e in &mut events {
            if let Payload::ToolResult(r) = &mut e.payload {
                r.output_ref = Some(output.to_string());
            }
        }
        if n == 1 {
            log.link_subject(exec_id(1), "acme", "subj-zq-7781")
                .await
                .unwrap();
        }
        log.append(exec_id(n), 0, &events).await.unwrap();
        refs.push(output);
    }

    let erased = log
        .erase_subject("acme", "subj-zq-7781", &blobs)
        .await
        .unwrap();
    assert_eq!(erased.blobs_deleted, vec![refs[0].to_string()]);
    assert!(matches!(
        blobs.get(&refs[0]).await,
        Err(SpineError::BlobNotFound(_))
    ));
    assert!(
        blobs.get(&refs[1]).await.is_ok(),
        "another execution's blob stays"
    );
    // Asked of the server directly, around the store.
    let raw = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("keel")
        .with_region("us-east-1")
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_access_key_id(ACCESS_KEY_ID)
        .with_secret_access_key(SECRET_ACCESS_KEY)
        .build()
        .unwrap();
    let gone = object_store::path::Path::from(blobs.key_of(&refs[0]));
    assert!(matches!(
        raw.head(&gone).await,
        Err(object_store::Error::NotFound { .. })
    ));
    let kept = object_store::path::Path::from(blobs.key_of(&refs[1]));
    assert!(raw.head(&kept).await.is_ok());
}
