//! Throwaway certificates made with the `openssl` command (installed by
//! `e2e/scripts/install-deps`): one CA, a server certificate for `127.0.0.1` / `localhost` and
//! a client certificate, all signed by the CA and valid for two days; more server certificates
//! for other names on request ([`Pki::issue_server`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, io};

/// The PEM files of a throwaway PKI.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The server certificate (SAN `IP:127.0.0.1`, `DNS:localhost`; server and client auth).
    pub server_cert: PathBuf,
    /// The server key.
    pub server_key: PathBuf,
    /// The client certificate (client auth).
    pub client_cert: PathBuf,
    /// The client key.
    pub client_key: PathBuf,
}

/// P-256 keys: quick to make, accepted by etcd, rustls and the apiserver.
const EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

impl Pki {
    /// Makes a CA, a server and a client certificate in `dir`.
    pub fn generate(dir: &Path) -> Result<Self, Error> {
        let ca_args = [
            &["req", "-x509"][..],
            &EC_KEY,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=switchboard-test-ca",
            ],
        ]
        .concat();
        openssl(dir, &ca_args)?;
        for (name, usage) in [
            ("server", "serverAuth,clientAuth"),
            ("client", "clientAuth"),
        ] {
            issue(dir, name, "IP:127.0.0.1,DNS:localhost", usage)?;
        }
        Ok(Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        })
    }
}

/// A server certificate and its key.
#[derive(Debug, Clone)]
pub struct ServerCert {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The key (PEM).
    pub key: PathBuf,
}

impl Pki {
    /// Issues another server certificate signed by the CA of `dir` (made by
    /// [`Pki::generate`]), as `<name>.pem` / `<name>.key`, for `sans` (openssl
    /// subjectAltName syntax, e.g. `DNS:signal.example,IP:192.0.2.7`). Each call gets a fresh
    /// key and serial, so two certificates for the same names tell a rotation apart.
    pub fn issue_server(dir: &Path, name: &str, sans: &str) -> Result<ServerCert, Error> {
        issue(dir, name, sans, "serverAuth")
    }
}

/// Issues `<name>.pem` / `<name>.key` in `dir`, signed by its CA, for `sans` with `usage`.
fn issue(dir: &Path, name: &str, sans: &str, usage: &str) -> Result<ServerCert, Error> {
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName={sans}\nextendedKeyUsage={usage}\n"),
    )
    .map_err(io(format!("writing {ext}")))?;
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    let subject = format!("/CN={name}");
    let request = [
        &["req"][..],
        &EC_KEY,
        &["-keyout", &key, "-out", &csr, "-subj", &subject],
    ]
    .concat();
    openssl(dir, &request)?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    )?;
    Ok(ServerCert {
        cert: dir.join(pem),
        key: dir.join(key),
    })
}

/// Runs `openssl args` in `dir`.
pub(crate) fn openssl(dir: &Path, args: &[&str]) -> Result<(), Error> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(io(
            "running openssl (installed by e2e/scripts/install-deps)",
        ))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Openssl {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}
