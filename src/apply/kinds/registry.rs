//! Image digests from a registry's HTTP API (the distribution spec), not from a local pull:
//! `HEAD /v2/<name>/manifests/<tag>` with the OCI and Docker manifest media types in
//! `Accept`, read `Docker-Content-Digest`. A 401 is answered as its `WWW-Authenticate`
//! asks: a bearer token from the realm (with credentials when there are some), or basic
//! authentication. Credentials come from `KCIDEPLOY_REGISTRY_USERNAME` / `_PASSWORD` or the
//! Docker config, as for pushes, and are never logged.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, WWW_AUTHENTICATE};
use sha2::{Digest, Sha256};

/// Every manifest kind a tag may name: multi-platform indexes first, then single manifests.
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// An image reference split as Docker reads it (`kernelci/kernelci:pipeline` is
/// `docker.io/kernelci/kernelci:pipeline`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// As written, without any `@digest`.
    pub written: String,
    /// Registry host as written (`docker.io` when none is).
    pub registry: String,
    /// Repository path in the registry (`library/busybox` for `busybox` on Docker Hub).
    pub path: String,
    pub tag: String,
    /// A digest already written in the reference.
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(reference: &str) -> Result<ImageRef, String> {
        let reference = reference.trim();
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => {
                if !is_sha256_digest(digest) {
                    return Err(format!(
                        "image `{reference}`: `{digest}` is not a sha256:<64 hex> digest"
                    ));
                }
                (rest, Some(digest.to_string()))
            }
            None => (reference, None),
        };
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                rest[last_slash + i + 1..].to_string(),
            ),
            None => (rest, "latest".to_string()),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let path = if registry == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let valid_path = !path.is_empty()
            && path.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        let valid_tag = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid_path || !valid_tag {
            return Err(format!(
                "`{reference}` is not an image reference ([registry/]name[:tag][@digest])"
            ));
        }
        Ok(ImageRef {
            written: rest.to_string(),
            registry,
            path,
            tag,
            digest,
        })
    }

    /// Where the registry's API answers: Docker Hub's API host, plain HTTP for a registry on
    /// the loopback interface (as Docker allows), HTTPS otherwise.
    pub fn api_base(&self) -> String {
        let host = self.registry.as_str();
        if host == "docker.io" || host == "index.docker.io" {
            return "https://registry-1.docker.io".into();
        }
        let name = host
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map(|(name, _)| name)
            .unwrap_or(host);
        let loopback = name == "localhost"
            || name == "[::1]"
            || name
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback());
        match loopback {
            true => format!("http://{host}"),
            false => format!("https://{host}"),
        }
    }

    /// The reference pinned to `digest`: `kernelci/kernelci:pipeline@sha256:...`.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}@{digest}", self.written)
    }
}

/// `sha256:` and 64 lower-case hex digits.
pub fn is_sha256_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Username and password for a registry, from the environment or the Docker config (a
/// credential helper's answer within `limit`).
async fn credentials(
    image: &ImageRef,
    limit: Duration,
) -> Result<Option<(String, String)>, String> {
    // Docker Hub's entry is keyed `https://index.docker.io/v1/`: the lookup of a reference
    // without a registry host finds it.
    let reference = match image.registry.as_str() {
        "docker.io" | "index.docker.io" => image.path.clone(),
        host => format!("{host}/{}", image.path),
    };
    let found = super::docker::credentials_within(&reference, limit).await?;
    Ok(found.and_then(|f| Some((f.username?, f.password?))))
}

/// The digest of the manifest `image` names (its tag), asked of its registry. Every request
/// is bounded by `limit` (`timeouts.registry`), connecting by `connect`; errors name the
/// registry host and the cause.
pub async fn resolve(
    client: &reqwest::Client,
    image: &ImageRef,
    limit: Duration,
    connect: Duration,
) -> Result<String, String> {
    if let Some(digest) = &image.digest {
        return Ok(digest.clone());
    }
    let host = &image.registry;
    let url = format!(
        "{}/v2/{}/manifests/{}",
        image.api_base(),
        image.path,
        image.tag
    );
    let what = format!("{}:{}", image.path, image.tag);
    let fail = |cause: String| format!("cannot resolve {what} in registry {host}: {cause}");
    let send = |auth: Option<String>, head: bool| {
        let mut request = match head {
            true => client.head(&url),
            false => client.get(&url),
        };
        request = request.header(ACCEPT, MANIFEST_TYPES).timeout(limit);
        if let Some(auth) = auth {
            request = request.header(AUTHORIZATION, auth);
        }
        request.send()
    };
    let no_answer = |e: reqwest::Error| fail(answerless(&e, limit, connect));
    let mut response = send(None, true).await.map_err(no_answer)?;
    let mut auth = None;
    if response.status() == StatusCode::UNAUTHORIZED {
        let challenge = header(response.headers(), WWW_AUTHENTICATE);
        let header_value = authorize(client, image, &challenge, (limit, connect))
            .await
            .map_err(fail)?;
        auth = Some(header_value);
        response = send(auth.clone(), true).await.map_err(no_answer)?;
    }
    match response.status() {
        s if s.is_success() => {}
        StatusCode::NOT_FOUND => return Err(fail("no such manifest (404)".into())),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            return Err(fail(format!(
                "access refused ({}): set KCIDEPLOY_REGISTRY_USERNAME and _PASSWORD, or log in \
                 with docker login",
                response.status()
            )));
        }
        s => return Err(fail(format!("answered {s}"))),
    }
    let digest = header(response.headers(), "docker-content-digest".parse().ok());
    if is_sha256_digest(&digest) {
        return Ok(digest);
    }
    // Registries need not send the header: the digest is the SHA-256 of the manifest's bytes.
    let response = send(auth, false).await.map_err(no_answer)?;
    if !response.status().is_success() {
        return Err(fail(format!("GET answered {}", response.status())));
    }
    let body = response.bytes().await.map_err(no_answer)?;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(&body))))
}

fn header(headers: &HeaderMap, name: impl Into<Option<reqwest::header::HeaderName>>) -> String {
    name.into()
        .and_then(|n| headers.get(n))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Why a request got no answer, for people.
fn answerless(e: &reqwest::Error, limit: Duration, connect: Duration) -> String {
    crate::support::http::no_answer(e, connect, (limit, "timeouts.registry"))
}

/// The `Authorization` header a 401's challenge asks for.
async fn authorize(
    client: &reqwest::Client,
    image: &ImageRef,
    challenge: &str,
    (limit, connect): (Duration, Duration),
) -> Result<String, String> {
    let (scheme, params) = parse_challenge(challenge)
        .ok_or_else(|| format!("answered 401 without a usable challenge ({challenge:?})"))?;
    let creds = credentials(image, limit).await?;
    match scheme.as_str() {
        "basic" => {
            let (user, password) = creds.ok_or(
                "it asks for a login (basic): set KCIDEPLOY_REGISTRY_USERNAME and _PASSWORD, or \
                 log in with docker login",
            )?;
            Ok(basic(&user, &password))
        }
        "bearer" => {
            let realm = params
                .iter()
                .find(|(k, _)| k == "realm")
                .map(|(_, v)| v.clone())
                .ok_or("its bearer challenge names no realm")?;
            let mut query: Vec<(String, String)> = params
                .into_iter()
                .filter(|(k, _)| k == "service" || k == "scope")
                .collect();
            if !query.iter().any(|(k, _)| k == "scope") {
                query.push(("scope".into(), format!("repository:{}:pull", image.path)));
            }
            let mut request = client.get(&realm).query(&query).timeout(limit);
            if let Some((user, password)) = &creds {
                request = request.header(AUTHORIZATION, basic(user, password));
            }
            let token_host = reqwest::Url::parse(&realm)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| "?".into());
            let response = request.send().await.map_err(|e| {
                format!(
                    "no token from {token_host}: {}",
                    answerless(&e, limit, connect)
                )
            })?;
            if !response.status().is_success() {
                return Err(format!(
                    "the token service {token_host} answered {}",
                    response.status()
                ));
            }
            let body: serde_json::Value = response
                .json()
                .await
                .map_err(|e| format!("the token service {token_host} answered: {e}"))?;
            let token = body["token"]
                .as_str()
                .or_else(|| body["access_token"].as_str())
                .ok_or_else(|| format!("the token service {token_host} sent no token"))?;
            Ok(format!("Bearer {token}"))
        }
        other => Err(format!(
            "it asks for `{other}` authentication, not supported"
        )),
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="..."`
/// → (`bearer`, [(realm, ...), ...]).
pub fn parse_challenge(header: &str) -> Option<(String, Vec<(String, String)>)> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, tail) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_once(',').map_or((after, ""), |(v, t)| (v, t)),
        };
        params.push((key.trim().to_ascii_lowercase(), value.to_string()));
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some((scheme.to_ascii_lowercase(), params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_read_as_docker_reads_them() {
        let r = ImageRef::parse("kernelci/kernelci:pipeline").expect("ref");
        assert_eq!(
            (r.registry.as_str(), r.path.as_str(), r.tag.as_str()),
            ("docker.io", "kernelci/kernelci", "pipeline")
        );
        assert_eq!(r.api_base(), "https://registry-1.docker.io");
        let r = ImageRef::parse("busybox").expect("ref");
        assert_eq!(
            (r.path.as_str(), r.tag.as_str()),
            ("library/busybox", "latest")
        );
        let r = ImageRef::parse("127.0.0.1:5000/kernelci/kernelci:api").expect("ref");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.api_base(), "http://127.0.0.1:5000");
        let r = ImageRef::parse("ghcr.io/kernelci/staging-kernelci:pipeline-cron").expect("ref");
        assert_eq!(r.api_base(), "https://ghcr.io");
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("kernelci/kernelci:api@{digest}")).expect("ref");
        assert_eq!(r.digest.as_deref(), Some(digest.as_str()));
        assert_eq!(r.written, "kernelci/kernelci:api");
        assert_eq!(r.pinned(&digest), format!("kernelci/kernelci:api@{digest}"));
        assert!(ImageRef::parse("Kernelci/X:y").is_err());
        assert!(ImageRef::parse("x@sha256:12").is_err());
    }

    #[test]
    fn challenges_are_parsed() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:kernelci/kernelci:pull""#,
        )
        .expect("challenge");
        assert_eq!(scheme, "bearer");
        assert_eq!(
            params[0],
            ("realm".into(), "https://auth.docker.io/token".into())
        );
        assert_eq!(params[1], ("service".into(), "registry.docker.io".into()));
        assert_eq!(params[2].1, "repository:kernelci/kernelci:pull");
        let (scheme, params) = parse_challenge(r#"Basic realm="Registry Realm""#).expect("basic");
        assert_eq!((scheme.as_str(), params.len()), ("basic", 1));
    }
}
