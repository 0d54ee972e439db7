//! TLS for fake servers, as a real Kubernetes API server has it: a CA, a server certificate
//! for 127.0.0.1 signed by it, a client certificate it signed (the kubeconfig's
//! `client-certificate-data`), all made with the `openssl` CLI; and an axum listener that
//! speaks TLS (rustls) and requires a client certificate from that CA.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// PEM files of a CA, a server certificate and a client certificate.
pub struct Pki {
    pub ca: Vec<u8>,
    pub server_cert: Vec<u8>,
    pub server_key: Vec<u8>,
    pub client_cert: Vec<u8>,
    pub client_key: Vec<u8>,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// Make the keys and certificates in `dir`.
    pub fn make(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        // Extensions make them X.509 v3 certificates, which rustls requires.
        let ext = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";
        std::fs::write(dir.join("server.ext"), ext).expect("ext");
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=fake-kube-ca"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
        openssl(dir, &ca);
        for (name, cn) in [
            ("server", "/CN=kube-apiserver"),
            ("client", "/CN=kcideploy/O=system:masters"),
        ] {
            let mut req = vec!["req", "-subj", cn];
            req.extend(ec);
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let crt = format!("{name}.crt");
            req.extend(["-keyout", key.as_str(), "-out", csr.as_str()]);
            openssl(dir, &req);
            let mut sign = vec![
                "x509",
                "-req",
                "-in",
                csr.as_str(),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                crt.as_str(),
            ];
            let ext = format!("{name}.ext");
            sign.extend(["-extfile", ext.as_str()]);
            openssl(dir, &sign);
        }
        let read = |f: &str| std::fs::read(dir.join(f)).expect(f);
        Pki {
            ca: read("ca.crt"),
            server_cert: read("server.crt"),
            server_key: read("server.key"),
            client_cert: read("client.crt"),
            client_key: read("client.key"),
        }
    }
}

/// A TLS listener requiring a client certificate signed by the CA.
pub struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client the server refuses (no certificate, an unknown CA) is dropped.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Serve `app` over TLS on 127.0.0.1 in its own thread; returns `https://127.0.0.1:PORT`.
pub fn serve_tls(app: axum::Router, pki: &Pki) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pki.ca) {
        roots.add(cert.expect("ca pem")).expect("ca");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .expect("client verifier");
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pki.server_cert)
        .map(|c| c.expect("server pem"))
        .collect();
    let key = PrivateKeyDer::from_pem_slice(&pki.server_key).expect("server key");
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        runtime.block_on(async move {
            let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let _ = tx.send(tcp.local_addr().expect("addr"));
            let _ = axum::serve(TlsListener { tcp, acceptor }, app).await;
        });
    });
    format!("https://{}", rx.recv().expect("server started"))
}
