//! The `--etcd-*` TLS flags against a real etcd server that requires client certificates.

use std::time::Duration;

use signaling_node::cluster::ClusterArgs;
use switchboard_testkit::Etcd;

fn args(etcd: &Etcd, with_client_cert: bool) -> ClusterArgs {
    let tls = etcd.tls().expect("TLS server");
    ClusterArgs {
        etcd_endpoints: vec![etcd.endpoint()],
        namespace: "test".into(),
        cluster: Some("tls".into()),
        etcd_ca_file: Some(tls.ca.clone()),
        etcd_cert_file: with_client_cert.then(|| tls.client_cert.clone()),
        etcd_key_file: with_client_cert.then(|| tls.client_key.clone()),
        ..ClusterArgs::default()
    }
}

#[tokio::test]
async fn mutual_tls_flags_connect_and_a_missing_client_certificate_is_refused() {
    switchboard_testkit::init_tracing();
    let etcd = Etcd::start_tls().await;

    let client = args(&etcd, true).connect().await.unwrap();
    let mut kv = client.kv_client();
    kv.put("/switchboard/test/tls/probe", "ok", None)
        .await
        .unwrap();
    let value = kv.get("/switchboard/test/tls/probe", None).await.unwrap();
    assert_eq!(value.kvs()[0].value(), b"ok");

    // The server demands a client certificate: without one every request fails.
    let anonymous = args(&etcd, false).connect().await.unwrap();
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        anonymous
            .kv_client()
            .get("/switchboard/test/tls/probe", None),
    )
    .await;
    assert!(
        matches!(refused, Ok(Err(_)) | Err(_)),
        "a client without certificate must not read: {refused:?}"
    );
}
