//! The etcd endpoint guard against a real etcd beside a member that refuses connections:
//! the client stops sending to the refusing one (docs/reliability.md, finding 15).

use std::time::Duration;

use etcd_client::Client;
use switchboard_contract::endpoints;
use switchboard_testkit::Etcd;

/// An address nothing listens on (bound, then closed).
fn refused() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// How many of `n` puts through `client` fail.
async fn failed_puts(client: &Client, n: usize) -> usize {
    let mut kv = client.kv_client();
    let mut failed = 0;
    for i in 0..n {
        let put = kv.put(format!("guard/{i}"), "v", None);
        if !matches!(
            tokio::time::timeout(Duration::from_secs(2), put).await,
            Ok(Ok(_))
        ) {
            failed += 1;
        }
    }
    failed
}

/// A real etcd listed between two endpoints that refuse connections, and a client of all three.
async fn live_between_refusing() -> (Etcd, Client, Vec<String>) {
    switchboard_testkit::init_tracing();
    let etcd = Etcd::start().await;
    let endpoints = vec![refused(), etcd.endpoint(), refused()];
    let client = Client::connect(endpoints.clone(), None).await.unwrap();
    (etcd, client, endpoints)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_avoid_a_member_that_refuses_connections() {
    let (_etcd, client, endpoints) = live_between_refusing().await;
    let guard = endpoints::guard(client.clone(), endpoints).await;
    // The refusing members stay out through later probe rounds.
    tokio::time::sleep(endpoints::PROBE_EVERY * 3).await;
    assert_eq!(
        failed_puts(&client, 40).await,
        0,
        "every put reached the live member"
    );
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_probe_before_the_first_request_is_enough() {
    let (_etcd, client, endpoints) = live_between_refusing().await;
    // The guard returns once its first probe has taken the refusing members out.
    let _guard = endpoints::guard(client.clone(), endpoints).await;
    assert_eq!(
        failed_puts(&client, 40).await,
        0,
        "every put reached the live member"
    );
}
