//! A real registry (Debian's `docker-registry`, the CNCF distribution
//! server) on the loopback interface, `skopeo`, and OCI layouts made by
//! hand for images osstore did not push.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Why the registry tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    for tool in [
        "/usr/bin/docker-registry",
        "/usr/bin/skopeo",
        "/usr/bin/htpasswd",
    ] {
        if !Path::new(tool).exists() {
            return Some(format!(
                "{tool} is missing (make deps installs docker-registry skopeo apache2-utils)"
            ));
        }
    }
    if !nix::unistd::geteuid().is_root() {
        return Some("the fixture tree needs root (chown, mknod)".into());
    }
    None
}

/// A registry process with its storage in a temp dir; stopped on drop.
pub struct Registry {
    child: Child,
    pub dir: tempfile::TempDir,
    pub addr: String,
}

pub const USER: &str = "builder";
pub const PASSWORD: &str = "s3cret-Pa55";

impl Registry {
    /// Starts a registry; with `auth`, htpasswd basic auth for
    /// [`USER`]/[`PASSWORD`] (bcrypt).
    pub fn start(auth: bool) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("storage").display()
        );
        if auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", USER, PASSWORD])
                .output()
                .expect("htpasswd");
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(dir.path().join("htpasswd"), &out.stdout).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: osstore-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write config");
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).expect("log"))
            .spawn()
            .expect("start docker-registry");
        let registry = Registry { child, dir, addr };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        // A safety net for a registry that never comes up, not a timing check.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(&self.addr) {
                let _ = write!(s, "GET /v2/ HTTP/1.0\r\n\r\n");
                let mut buf = [0u8; 12];
                if std::io::Read::read(&mut s, &mut buf).unwrap_or(0) >= 12
                    && (buf.ends_with(b"200") || buf.ends_with(b"401"))
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "registry on {} did not start: {}",
            self.addr,
            std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
        );
    }

    /// `host:port/name`.
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.addr)
    }

    /// The file holding the blob `digest` in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.dir.path().join(format!(
            "storage/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs skopeo with `args`; panics with its output on failure.
pub fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sha256(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    h.finalize()
        .iter()
        .fold(String::from("sha256:"), |mut s, b| {
            s.push_str(&format!("{b:02x}"));
            s
        })
}

/// One tar entry of a hand-made layer.
pub enum Item<'a> {
    File(&'a [u8], &'a [u8]),
    Dir(&'a [u8]),
    Symlink(&'a [u8], &'a [u8]),
    /// A GNU sparse file claiming `.1` bytes with 512 bytes of data.
    SparseClaim(&'a [u8], u64),
}

/// An uncompressed tar of `items`, names written as given (no checks).
pub fn tar_of(items: &[Item]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for item in items {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        let (name, data): (&[u8], Vec<u8>) = match item {
            Item::File(n, d) => {
                h.set_entry_type(tar::EntryType::Regular);
                (n, d.to_vec())
            }
            Item::Dir(n) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                (n, Vec::new())
            }
            Item::Symlink(n, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
                (n, Vec::new())
            }
            Item::SparseClaim(n, size) => {
                h.set_entry_type(tar::EntryType::GNUSparse);
                let g = h.as_gnu_mut().expect("gnu");
                g.sparse[0].set_offset(size - 512);
                g.sparse[0].set_length(512);
                g.set_real_size(*size);
                (n, vec![7u8; 512])
            }
        };
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data.as_slice()).expect("append");
    }
    b.into_inner().expect("tar")
}

/// Writes an OCI layout at `dir` holding one image tagged `tag` whose
/// layers are the gzip-compressed `layers` (uncompressed tars).
pub fn oci_layout(dir: &Path, tag: &str, layers: &[Vec<u8>]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    let put = |bytes: &[u8]| {
        let d = sha256(bytes);
        std::fs::write(blobs.join(&d[7..]), bytes).expect("write blob");
        d
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for tar in layers {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(tar).expect("gzip");
        let gz = gz.finish().expect("gzip");
        diff_ids.push(sha256(tar));
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(&gz), "size": gz.len()}));
    }
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}).to_string();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config.as_bytes()), "size": config.len()},
        "layers": descs,
    })
    .to_string();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest.as_bytes()), "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).expect("index");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("layout");
}

/// Copies the OCI layout image `dir:tag` to `docker://<image>` with skopeo
/// (an image index with every image it lists).
pub fn skopeo_push_layout(dir: &Path, tag: &str, image: &str) {
    let src = format!("oci:{}:{tag}", dir.display());
    let dst = format!("docker://{image}");
    skopeo(&[
        "copy",
        "--quiet",
        "--all",
        "--dest-tls-verify=false",
        &src,
        &dst,
    ]);
}
