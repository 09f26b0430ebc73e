//! Certificates made at run time for TLS tests (with the `openssl` command;
//! none is committed): a CA, a server certificate for 127.0.0.1 signed by
//! it, a client certificate signed by it, and a second CA that signed
//! nothing the server presents.

use std::path::{Path, PathBuf};
use std::process::Command;

use quern_common::throwaway_redis::ServerTls;

/// A temporary directory of PEM files, deleted when dropped.
#[derive(Debug)]
pub struct TestCerts {
    dir: tempfile::TempDir,
}

impl TestCerts {
    /// Make the certificates (EC P-256, valid for a day). Panics with the
    /// command's output when `openssl` fails or is not installed.
    pub fn generate() -> Self {
        let dir =
            tempfile::Builder::new().prefix("quern-test-certs-").tempdir().expect("a temporary directory");
        let certs = Self { dir };
        certs.make_ca("ca", "quern test CA");
        certs.make_ca("other-ca", "quern test other CA");
        certs.make_signed(
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        certs.make_signed("client", "quern test client", "extendedKeyUsage=clientAuth\n");
        certs
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA that signed the server and client certificates.
    pub fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }

    /// A CA that signed neither.
    pub fn other_ca(&self) -> PathBuf {
        self.path("other-ca.crt")
    }

    /// The client certificate (signed by [`TestCerts::ca`]).
    pub fn client_cert(&self) -> PathBuf {
        self.path("client.crt")
    }

    /// The client certificate's private key.
    pub fn client_key(&self) -> PathBuf {
        self.path("client.key")
    }

    /// What a TLS-only redis-server needs; with `require_client_cert` it
    /// refuses clients without a certificate signed by [`TestCerts::ca`].
    pub fn server(&self, require_client_cert: bool) -> ServerTls {
        ServerTls {
            cert: self.path("server.crt"),
            key: self.path("server.key"),
            ca: self.ca(),
            require_client_cert,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn make_ca(&self, name: &str, cn: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ]);
    }

    fn make_signed(&self, name: &str, cn: &str, extensions: &str) {
        let ext = format!("{name}.ext");
        std::fs::write(
            self.path(&ext),
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{extensions}"),
        )
        .expect("write an extensions file");
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &format!("{name}.crt"),
        ]);
    }

    fn openssl(&self, args: &[&str]) {
        let out =
            Command::new("openssl").args(args).current_dir(self.dir.path()).output().unwrap_or_else(|e| {
                panic!("cannot run openssl ({e}); install it (Debian: apt-get install openssl)")
            });
        assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}
