//! The HTTP side of the distribution API: one [`Client`] per repository,
//! with authentication (anonymous, basic, bearer token), bounded retries of
//! transient failures, blob existence checks, cross-repository mounts,
//! monolithic or chunked uploads and resumable downloads.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Mutex;
use std::time::Duration;

use ureq::http::Response;
use ureq::tls::{RootCerts, TlsConfig};
use ureq::{Agent, Body, SendBody};

use super::RegistryOptions;
use super::auth::{self, Challenge, Credentials};
use super::progress::Meter;
use super::reference::Reference;
use crate::error::{Error, Result};

/// Attempts for one request before a transient failure is reported.
const ATTEMPTS: u32 = 5;
/// The longest wait before a retry, whatever `Retry-After` asks.
const MAX_WAIT: Duration = Duration::from_secs(10);
/// Size of a chunk when the registry asks for chunked uploads and allows
/// chunks this large.
const CHUNK: u64 = 16 << 20;

/// An image manifest as fetched: its bytes, media type and digest.
pub(crate) struct Fetched {
    pub(crate) bytes: Vec<u8>,
    pub(crate) media_type: String,
}

/// A connection to one repository of one registry.
pub(crate) struct Client {
    agent: Agent,
    base: String,
    pub(crate) reference: Reference,
    credentials: Option<Credentials>,
    /// The `Authorization` header that worked last.
    authorization: Mutex<Option<String>>,
}

/// True for hosts that may be reached over plain HTTP without the insecure
/// flag.
fn is_loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    };
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

fn errno_for_status(status: u16) -> i32 {
    match status {
        401 | 403 => libc::EACCES,
        404 => libc::ENOENT,
        413 => libc::EFBIG,
        400..=499 => libc::EPROTO,
        _ => libc::EIO,
    }
}

fn transient(status: u16) -> bool {
    matches!(status, 408 | 429 | 502 | 503 | 504)
}

impl Client {
    pub(crate) fn new(reference: &Reference, options: &RegistryOptions) -> Result<Client> {
        let scheme = if options.insecure || is_loopback(&reference.registry) {
            "http"
        } else {
            "https"
        };
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::PlatformVerifier)
            .build();
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .timeout_connect(Some(Duration::from_secs(30)))
            .build()
            .into();
        Ok(Client {
            agent,
            base: format!("{scheme}://{}", reference.registry),
            credentials: auth::credentials(
                options.auth_file.as_deref(),
                &reference.registry,
                &reference.repository,
            )?,
            reference: reference.clone(),
            authorization: Mutex::new(None),
        })
    }

    /// `registry/repository`, for messages.
    pub(crate) fn place(&self) -> String {
        self.reference.place()
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.base, self.reference.repository)
    }

    /// An error naming the registry, the repository and the HTTP status.
    fn status_error(&self, what: &str, status: u16) -> Error {
        let hint = match status {
            401 => match &self.credentials {
                Some(c) => format!(" (the credentials of user {:?} were refused)", c.user),
                None => " (no credentials for this registry in the auth file)".into(),
            },
            403 => " (access denied)".into(),
            _ => String::new(),
        };
        Error::new(
            errno_for_status(status),
            format!(
                "{what}: registry {} answered HTTP {status}{hint}",
                self.place()
            ),
        )
    }

    /// Sends a request built by `make` (given the agent and the current
    /// `Authorization` value) until it gets an answer that is not a
    /// transient failure, authenticating on `401` challenges. Returns the
    /// answer whatever its status; transport errors after the last attempt
    /// become errors.
    pub(crate) fn send(
        &self,
        what: &str,
        mut make: impl FnMut(&Agent, Option<&str>) -> std::result::Result<Response<Body>, ureq::Error>,
    ) -> Result<Response<Body>> {
        let mut attempt = 0;
        let mut auth_rounds = 0;
        loop {
            attempt += 1;
            let current = self
                .authorization
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let wait = match make(&self.agent, current.as_deref()) {
                Ok(resp) if resp.status() == 401 && auth_rounds < 3 => {
                    auth_rounds += 1;
                    let header = resp
                        .headers()
                        .get("www-authenticate")
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_owned);
                    let Some(new) = header
                        .and_then(|h| self.answer(&h).transpose())
                        .transpose()?
                    else {
                        return Ok(resp);
                    };
                    if current.as_deref() == Some(new.as_str()) {
                        return Ok(resp);
                    }
                    *self.authorization.lock().unwrap_or_else(|p| p.into_inner()) = Some(new);
                    attempt -= 1;
                    continue;
                }
                Ok(resp) if transient(resp.status().as_u16()) && attempt < ATTEMPTS => resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs),
                Ok(resp) => return Ok(resp),
                Err(e) => {
                    let retry = matches!(
                        e,
                        ureq::Error::Io(_)
                            | ureq::Error::Timeout(_)
                            | ureq::Error::ConnectionFailed
                            | ureq::Error::Protocol(_)
                    );
                    if !retry || attempt >= ATTEMPTS {
                        let errno = match &e {
                            ureq::Error::Io(io) => io.raw_os_error().unwrap_or(libc::EIO),
                            ureq::Error::ConnectionFailed => libc::ECONNREFUSED,
                            ureq::Error::HostNotFound => libc::EHOSTUNREACH,
                            ureq::Error::Timeout(_) => libc::ETIMEDOUT,
                            _ => libc::EIO,
                        };
                        return Err(Error::new(
                            errno,
                            format!("{what}: registry {}: {e}", self.place()),
                        ));
                    }
                    None
                }
            };
            let backoff = Duration::from_millis(200 << attempt.min(6));
            std::thread::sleep(wait.unwrap_or(backoff).min(MAX_WAIT));
        }
    }

    /// The `Authorization` value answering `challenge`, or `None` when no
    /// answer is possible (basic auth asked and no credentials known).
    fn answer(&self, challenge: &str) -> Result<Option<String>> {
        match auth::parse_challenge(challenge) {
            Some(Challenge::Basic) => Ok(self.credentials.as_ref().map(Credentials::basic)),
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let mut url = realm.clone();
                let mut sep = if url.contains('?') { '&' } else { '?' };
                for (k, v) in [("service", service), ("scope", scope)] {
                    if let Some(v) = v {
                        url.push_str(&format!("{sep}{k}={}", encode(&v)));
                        sep = '&';
                    }
                }
                let basic = self.credentials.as_ref().map(Credentials::basic);
                let mut resp = self.send_plain("cannot get a registry token", || {
                    let mut req = self.agent.get(&url);
                    if let Some(b) = &basic {
                        req = req.header("Authorization", b);
                    }
                    req.call()
                })?;
                if resp.status() != 200 {
                    return Err(self.status_error(
                        &format!("cannot get a token from {realm}"),
                        resp.status().as_u16(),
                    ));
                }
                let body = resp.body_mut().read_to_string().map_err(|e| {
                    Error::new(
                        libc::EIO,
                        format!("cannot read the token from {realm}: {e}"),
                    )
                })?;
                let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let token = json
                    .get("token")
                    .or(json.get("access_token"))
                    .and_then(|t| t.as_str());
                token.map(|t| Some(format!("Bearer {t}"))).ok_or_else(|| {
                    Error::new(
                        libc::EPROTO,
                        format!("the token service {realm} answered no token"),
                    )
                })
            }
            None => Ok(None),
        }
    }

    /// A request to the token service, with retries but no authentication.
    fn send_plain(
        &self,
        what: &str,
        mut make: impl FnMut() -> std::result::Result<Response<Body>, ureq::Error>,
    ) -> Result<Response<Body>> {
        self.send(what, |_, _| make())
    }

    /// Whether the repository has the blob `digest`.
    pub(crate) fn has_blob(&self, digest: &str) -> Result<bool> {
        let url = self.url(&format!("blobs/{digest}"));
        let what = format!("cannot check blob {digest}");
        let resp = self.send(&what, |a, auth| with_auth(a.head(&url), auth).call())?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            s => Err(self.status_error(&what, s)),
        }
    }

    /// Uploads the blob in `file` (`size` bytes, `digest`) unless it can be
    /// mounted from the repository `mount_from` of the same registry.
    /// Returns true when bytes were sent.
    pub(crate) fn upload(
        &self,
        file: &File,
        size: u64,
        digest: &str,
        mount_from: Option<&str>,
        meter: &Meter,
    ) -> Result<bool> {
        let what = format!("cannot upload blob {digest}");
        let mut start = self.url("blobs/uploads/");
        if let Some(from) = mount_from.filter(|f| *f != self.reference.repository) {
            start.push_str(&format!("?mount={digest}&from={}", encode(from)));
        }
        let resp = self.send(&what, |a, auth| {
            with_auth(a.post(&start), auth)
                .header("Content-Length", "0")
                .send_empty()
        })?;
        let status = resp.status().as_u16();
        if status == 201 {
            return Ok(false);
        }
        if status != 202 {
            return Err(self.status_error(&what, status));
        }
        let mut location = self.location(&resp, &what)?;
        let min_chunk = resp
            .headers()
            .get("oci-chunk-min-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut sent = 0;
        if let Some(min) = min_chunk {
            let chunk = min.max(CHUNK);
            while sent < size {
                let len = chunk.min(size - sent);
                let range = format!("{sent}-{}", sent + len - 1);
                let resp = self.send(&what, |a, auth| {
                    let mut f = file;
                    f.seek(SeekFrom::Start(sent))?;
                    let mut body = meter.reader(f.take(len));
                    with_auth(a.patch(&location), auth)
                        .header("Content-Type", "application/octet-stream")
                        .header("Content-Length", &len.to_string())
                        .header("Content-Range", &range)
                        .send(SendBody::from_reader(&mut body))
                })?;
                if resp.status() != 202 {
                    return Err(self.status_error(&what, resp.status().as_u16()));
                }
                location = self.location(&resp, &what)?;
                sent += len;
            }
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = format!("{location}{sep}digest={digest}");
        let rest = size - sent;
        let resp = self.send(&what, |a, auth| {
            let mut f = file;
            f.seek(SeekFrom::Start(sent))?;
            let mut body = meter.reader(f.take(rest));
            with_auth(a.put(&put), auth)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Length", &rest.to_string())
                .send(SendBody::from_reader(&mut body))
        })?;
        match resp.status().as_u16() {
            201 | 204 => Ok(true),
            s => Err(self.status_error(&what, s)),
        }
    }

    fn location(&self, resp: &Response<Body>, what: &str) -> Result<String> {
        let loc = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Error::new(
                    libc::EPROTO,
                    format!("{what}: registry {} sent no upload location", self.place()),
                )
            })?;
        Ok(
            if loc.starts_with("http://") || loc.starts_with("https://") {
                loc.to_owned()
            } else {
                format!("{}{loc}", self.base)
            },
        )
    }

    /// Starts a download of the blob `digest` from byte `offset`. Returns
    /// the body and the offset it really starts at (0 when the registry
    /// ignored the range).
    pub(crate) fn blob_from(&self, digest: &str, offset: u64) -> Result<(Body, u64)> {
        let url = self.url(&format!("blobs/{digest}"));
        let what = format!("cannot download blob {digest}");
        let resp = self.send(&what, |a, auth| {
            let req = with_auth(a.get(&url), auth);
            if offset > 0 {
                req.header("Range", &format!("bytes={offset}-")).call()
            } else {
                req.call()
            }
        })?;
        match resp.status().as_u16() {
            200 => Ok((resp.into_body(), 0)),
            206 => Ok((resp.into_body(), offset)),
            s => Err(self.status_error(&what, s)),
        }
    }

    /// Fetches the manifest the reference names.
    pub(crate) fn manifest(&self) -> Result<Fetched> {
        let url = self.url(&format!("manifests/{}", self.reference.manifest_ref()));
        let what = format!(
            "cannot fetch the manifest of {}:{}",
            self.place(),
            self.reference.manifest_ref()
        );
        let accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json";
        let mut resp = self.send(&what, |a, auth| {
            with_auth(a.get(&url), auth).header("Accept", accept).call()
        })?;
        if resp.status() != 200 {
            return Err(self.status_error(&what, resp.status().as_u16()));
        }
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut bytes = Vec::new();
        resp.body_mut()
            .as_reader()
            .take(4 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&what, e))?;
        Ok(Fetched { bytes, media_type })
    }

    /// Fetches a small blob (a config) whole.
    pub(crate) fn small_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let (mut body, _) = self.blob_from(digest, 0)?;
        let mut bytes = Vec::new();
        body.as_reader()
            .take(16 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(format_args!("cannot download blob {digest}"), e))?;
        Ok(bytes)
    }

    /// Uploads a manifest under `tag_or_digest`.
    pub(crate) fn put_manifest(
        &self,
        tag_or_digest: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<()> {
        let url = self.url(&format!("manifests/{tag_or_digest}"));
        let what = format!(
            "cannot upload the manifest {}:{tag_or_digest}",
            self.place()
        );
        let resp = self.send(&what, |a, auth| {
            with_auth(a.put(&url), auth)
                .header("Content-Type", media_type)
                .send(bytes)
        })?;
        match resp.status().as_u16() {
            200 | 201 | 204 => Ok(()),
            s => Err(self.status_error(&what, s)),
        }
    }
}

fn with_auth<B>(req: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => req.header("Authorization", a),
        None => req,
    }
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
