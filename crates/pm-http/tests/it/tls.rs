//! TLS on the remote API (feature `tls`), checked with the system's `openssl` (to make a certificate) and `curl`
//! (as the client); skipped with a message when either is missing.
#![cfg(feature = "tls")]

use std::path::PathBuf;
use std::process::Command;

use pm_http::{ApiOptions, ServerConfig, TlsConfig};

use crate::limits::{connect_from, refused};
use crate::support::{FakeControl, TempDir};

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|out| out.status.success())
        || Command::new(tool).arg("version").output().is_ok_and(|out| out.status.success())
}

/// A self-signed certificate for `localhost` and 127.0.0.1 and its key, made in `dir` with `openssl`.
fn self_signed(dir: &TempDir) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_have_the_per_peer_cap() {
    if !have("openssl") {
        eprintln!("skipped: openssl is needed to check TLS");
        return;
    }
    let dir = TempDir::new();
    let (cert, key) = self_signed(&dir);
    let tls = TlsConfig::from_pem_files(&cert, &key).unwrap();
    let config = ServerConfig {
        max_connections_per_ip: 1,
        header_read_timeout: std::time::Duration::from_secs(20),
        ..ServerConfig::default()
    };
    let listener = pm_http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let server =
        pm_http::spawn_remote_api_tls(listener, FakeControl::new(), config, ApiOptions::default(), tls).unwrap();
    // The first connection of a peer waits in its handshake, holding the peer's only slot; the second is closed.
    let mut first = connect_from(server.local_addr(), [127, 0, 0, 2]).await;
    let mut second = connect_from(server.local_addr(), [127, 0, 0, 2]).await;
    assert!(refused(&mut second).await, "a second TLS connection of one peer was held");
    assert!(!refused(&mut first).await, "a TLS connection within the limits was refused");
    // Another peer still gets its own slot.
    let mut other = connect_from(server.local_addr(), [127, 0, 0, 3]).await;
    assert!(!refused(&mut other).await, "another peer's TLS connection was refused");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_over_tls_with_the_same_rules() {
    if !have("openssl") || !have("curl") {
        eprintln!("skipped: openssl and curl are needed to check TLS");
        return;
    }
    let dir = TempDir::new();
    let (cert, key) = self_signed(&dir);
    // Bad files are named.
    let err = TlsConfig::from_pem_files(&key, &key).unwrap_err();
    assert!(err.to_string().contains("key.pem"), "{err}");
    let tls = TlsConfig::from_pem_files(&cert, &key).unwrap();
    let fake = FakeControl::new();
    let listener = pm_http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let server =
        pm_http::spawn_remote_api_tls(listener, fake.clone(), ServerConfig::default(), ApiOptions::default(), tls)
            .unwrap();
    let port = server.local_addr().port();
    let curl = move |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let out =
                Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]).args(args).output().unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    let cacert = cert.to_string_lossy().into_owned();
    let url = format!("https://127.0.0.1:{port}/monitor/status");
    assert_eq!(curl(vec!["--cacert".into(), cacert.clone(), url.clone()]).await.unwrap(), "200");
    // Plain HTTP on the TLS port gets no answer.
    assert_eq!(curl(vec![format!("http://127.0.0.1:{port}/monitor/status")]).await.unwrap(), "000");
    // The browser rule holds over TLS: another origin is refused.
    let origin = "Origin: https://evil.example".to_owned();
    let res = curl(vec!["--cacert".into(), cacert, "-H".into(), origin, url]).await.unwrap();
    assert_eq!(res, "403");
    server.shutdown().await;
}
