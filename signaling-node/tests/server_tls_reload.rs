//! TLS certificate rotation on a real node and real sockets: new handshakes get the new
//! certificate within seconds of the files changing, connections already open keep working
//! (no reconnect, the call flow goes on), and files that hold no valid pair are refused while
//! the last good certificate keeps serving.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{TestNode, settings, token};
use signaling_node::config::TlsFiles;
use signaling_node::store::MemoryStore;
use switchboard_client::{Client, ConnectOptions};
use switchboard_protocol::Message;
use switchboard_testkit::{Pki, ServerCert, TempDir, eventually};

/// The DER of the certificate a fresh TLS handshake with the node gets.
async fn served_certificate(addr: SocketAddr, ca: &Path) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem_file: &Path) -> Vec<u8> {
    let pem = std::fs::read(pem_file).unwrap();
    rustls_pemfile::certs(&mut &pem[..])
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// Replaces the live files the way a Secret volume does: each file written aside, then
/// renamed into place.
fn install(live: &TlsFiles, cert: &[u8], key: &[u8]) {
    for (path, bytes) in [(&live.key, key), (&live.cert, cert)] {
        let aside = path.with_extension("new");
        std::fs::write(&aside, bytes).unwrap();
        std::fs::rename(&aside, path).unwrap();
    }
}

fn read(cert: &ServerCert) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(&cert.cert).unwrap(),
        std::fs::read(&cert.key).unwrap(),
    )
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_handshakes_and_open_connections_stay() {
    switchboard_testkit::init_tracing();
    let dir = TempDir::new("tls-reload").unwrap();
    let pki = Pki::generate(dir.path()).unwrap();
    let first = Pki::issue_server(dir.path(), "first", "DNS:localhost,IP:127.0.0.1").unwrap();
    let second = Pki::issue_server(dir.path(), "second", "DNS:localhost,IP:127.0.0.1").unwrap();
    let third = Pki::issue_server(dir.path(), "third", "DNS:localhost,IP:127.0.0.1").unwrap();
    let live = TlsFiles {
        cert: dir.path().join("live.crt"),
        key: dir.path().join("live.key"),
    };
    let (cert, key) = read(&first);
    install(&live, &cert, &key);
    let mut s = settings(|_| {});
    s.tls = Some(live.clone());
    let node = TestNode::start_with(s, Arc::new(MemoryStore::new())).await;
    assert_eq!(
        served_certificate(node.addr, &pki.ca).await,
        der(&first.cert)
    );

    // Two members in a room over wss, connected before the rotation.
    let url = format!("wss://localhost:{}/ws", node.addr.port());
    let connect = |user: &'static str| {
        let url = url.clone();
        let ca = pki.ca.clone();
        async move {
            let mut options = ConnectOptions::new(token(user, &["studio"]));
            options.ca_file = Some(ca);
            let client = Client::connect(&url, options).await.unwrap();
            client.join("studio").await.unwrap();
            client
        }
    };
    let alice = connect("alice").await;
    let mut bob = connect("bob").await;

    let (cert, key) = read(&second);
    install(&live, &cert, &key);
    eventually("new handshakes get the rotated certificate", || async {
        served_certificate(node.addr, &pki.ca).await == der(&second.cert)
    })
    .await;
    assert!(node.metric("switchboard_tls_reloads_total{outcome=\"reloaded\"}") >= 1.0);

    // The connections opened before the rotation were not touched.
    let call = alice.invite("studio", "bob").await.unwrap();
    let invite = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Message::Invite(invite) = bob.recv().await.unwrap() {
                return invite;
            }
        }
    })
    .await
    .expect("bob gets the invite over his pre-rotation connection");
    assert_eq!(invite.call_id, call);
    assert_eq!(alice.session().reconnects, 0);
    assert_eq!(bob.session().reconnects, 0);

    // Files that hold no valid pair are refused; the last good certificate stays.
    let refused = |n: f64| {
        let node = &node;
        move || async move { node.metric("switchboard_tls_reloads_total{outcome=\"refused\"}") >= n }
    };
    install(&live, b"not a certificate", &key);
    eventually("a garbage certificate is refused", refused(1.0)).await;
    assert_eq!(
        served_certificate(node.addr, &pki.ca).await,
        der(&second.cert)
    );
    let (third_cert, third_key) = read(&third);
    install(&live, &third_cert, &key);
    eventually("a key that does not fit is refused", refused(2.0)).await;
    assert_eq!(
        served_certificate(node.addr, &pki.ca).await,
        der(&second.cert)
    );

    // A valid pair again is taken.
    install(&live, &third_cert, &third_key);
    eventually("the next valid certificate is served", || async {
        served_certificate(node.addr, &pki.ca).await == der(&third.cert)
    })
    .await;
    assert_eq!(alice.session().reconnects, 0);
}
