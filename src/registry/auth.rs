//! Credentials from the auth files (`auth.json` / `config.json` format) and
//! the answers to `WWW-Authenticate` challenges. Secrets never appear in
//! messages: [`Credentials`] prints as its user name only.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::error::{Error, Result};

/// A user name and password (or identity token) for one registry.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) user: String,
    secret: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({:?}, <secret>)", self.user)
    }
}

impl Credentials {
    /// The value of a `Basic` `Authorization` header.
    pub(crate) fn basic(&self) -> String {
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", self.user, self.secret))
        )
    }
}

/// The auth file to read: `explicit`, else `$REGISTRY_AUTH_FILE`, else
/// `$XDG_RUNTIME_DIR/containers/auth.json`, else `~/.docker/config.json`
/// (the first of the defaults that exists).
fn auth_file(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let mut defaults = Vec::new();
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        defaults.push(Path::new(&run).join("containers/auth.json"));
    }
    if let Some(home) = std::env::var_os("HOME").filter(|p| !p.is_empty()) {
        defaults.push(Path::new(&home).join(".docker/config.json"));
    }
    defaults.into_iter().find(|p| p.exists())
}

/// The credentials for `registry`/`repository`, if the auth file has any.
/// Keys are matched as `containers-auth.json(5)` says: the longest of
/// `host/repo/path` prefixes first, then the host (with or without an
/// `https://` scheme and a path, as docker writes them).
pub(crate) fn credentials(
    explicit: Option<&Path>,
    registry: &str,
    repository: &str,
) -> Result<Option<Credentials>> {
    let Some(path) = auth_file(explicit) else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
            return Ok(None);
        }
        Err(e) => return Err(Error::path("cannot read auth file", &path, e)),
    };
    let bad = |why: &str| Error::invalid(format!("auth file {}: {why}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|_| bad("not valid JSON"))?;
    let Some(auths) = json.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let normalize = |key: &str| {
        let key = key
            .strip_prefix("https://")
            .or(key.strip_prefix("http://"))
            .unwrap_or(key);
        let key = key.trim_end_matches('/');
        key.strip_suffix("/v1")
            .or(key.strip_suffix("/v2"))
            .unwrap_or(key)
            .to_owned()
    };
    let mut wanted = vec![registry.to_owned()];
    let mut prefix = registry.to_owned();
    for part in repository.split('/') {
        prefix = format!("{prefix}/{part}");
        wanted.push(prefix.clone());
    }
    for want in wanted.iter().rev() {
        let Some(entry) = auths
            .iter()
            .find(|(k, _)| normalize(k) == *want)
            .map(|(_, v)| v)
        else {
            continue;
        };
        let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) else {
            if let Some(token) = entry.get("identitytoken").and_then(|t| t.as_str()) {
                return Ok(Some(Credentials {
                    user: "<token>".into(),
                    secret: token.into(),
                }));
            }
            continue;
        };
        let decoded = STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| {
                bad(&format!(
                    "the entry for {want} is not base64 of user:password"
                ))
            })?;
        let (user, secret) = decoded
            .split_once(':')
            .ok_or_else(|| bad(&format!("the entry for {want} is not user:password")))?;
        return Ok(Some(Credentials {
            user: user.into(),
            secret: secret.into(),
        }));
    }
    Ok(None)
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Basic realm="..."` or `Bearer realm="...",service="...",scope="..."`.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let (mut service, mut scope) = (None, None);
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_once(',').map_or((after, ""), |(v, a)| (v, a)),
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value.to_owned()),
            "service" => service = Some(value.to_owned()),
            "scope" => scope = Some(value.to_owned()),
            _ => {}
        }
        rest = after.trim_start_matches([',', ' ']);
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
        scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_challenges() {
        assert_eq!(parse_challenge("Basic realm=\"r\""), Some(Challenge::Basic));
        let c = parse_challenge(
            "Bearer realm=\"https://auth.io/token\",service=\"reg.io\",scope=\"repository:a/b:pull,push\"",
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.io/token".into(),
                service: Some("reg.io".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
    }

    #[test]
    fn registry_auth_file_lookup() {
        let dir = std::env::temp_dir().join(format!("osstore-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("auth.json");
        let enc = |s: &str| STANDARD.encode(s);
        std::fs::write(
            &file,
            format!(
                r#"{{"auths":{{"https://reg.io/v1/":{{"auth":"{}"}},"reg.io/team/app":{{"auth":"{}"}}}}}}"#,
                enc("host:pw1"),
                enc("repo:pw2")
            ),
        )
        .unwrap();
        let c = credentials(Some(&file), "reg.io", "team/app")
            .unwrap()
            .unwrap();
        assert_eq!(c.user, "repo");
        let c = credentials(Some(&file), "reg.io", "other")
            .unwrap()
            .unwrap();
        assert_eq!(c.user, "host");
        assert!(!format!("{c:?}").contains("pw1"));
        assert!(credentials(Some(&file), "else.io", "x").unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
