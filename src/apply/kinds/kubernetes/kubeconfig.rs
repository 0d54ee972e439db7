//! Which cluster, as whom: a kubeconfig read as kubectl reads it (the file given, else every
//! file of `$KUBECONFIG` merged with the first value winning, else `~/.kube/config`), one
//! context of it, and an HTTP client for that cluster: its CA (only it is trusted when
//! given), a client certificate, a bearer token (inline, from a file or from an `exec`
//! credential plugin such as `kubelogin`) or basic authentication. Credentials come from the
//! kubeconfig or what its plugin prints, and appear in no message, log or state.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use reqwest::header::HeaderValue;
use serde::Deserialize;

/// How long an `exec` credential plugin may take.
const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Deserialize)]
struct File {
    #[serde(default)]
    clusters: Option<Vec<Named<Cluster>>>,
    #[serde(default)]
    users: Option<Vec<Named<User>>>,
    #[serde(default)]
    contexts: Option<Vec<Named<Context>>>,
    #[serde(default, rename = "current-context")]
    current_context: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    #[serde(rename = "item")]
    item: Option<T>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    server: Option<String>,
    certificate_authority: Option<String>,
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    tls_server_name: Option<String>,
    proxy_url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    client_certificate: Option<String>,
    client_certificate_data: Option<String>,
    client_key: Option<String>,
    client_key_data: Option<String>,
    username: Option<String>,
    password: Option<String>,
    exec: Option<Exec>,
    auth_provider: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Exec {
    command: String,
    #[serde(default)]
    args: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<EnvVar>>,
    api_version: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct EnvVar {
    name: String,
    value: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Context {
    cluster: String,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

/// One cluster to talk to.
pub struct Target {
    /// The API server's URL, without a trailing `/`.
    pub server: String,
    /// The context's name.
    pub context: String,
    /// The context's default namespace.
    pub namespace: Option<String>,
    pub client: reqwest::Client,
    /// `Authorization`, when the user has a token or a password (marked sensitive).
    pub auth: Option<HeaderValue>,
}

/// The kubeconfig files to read: `explicit` (relative to `dir`), else `$KUBECONFIG`'s,
/// else `~/.kube/config`.
fn files(explicit: Option<&str>, dir: &Path) -> Result<Vec<PathBuf>, String> {
    if let Some(path) = explicit {
        return Ok(vec![dir.join(path)]);
    }
    if let Some(list) = std::env::var_os("KUBECONFIG").filter(|l| !l.is_empty()) {
        let found: Vec<PathBuf> = std::env::split_paths(&list)
            .filter(|p| p.is_file())
            .collect();
        return match found.is_empty() {
            true => Err("no file named by $KUBECONFIG exists".into()),
            false => Ok(found),
        };
    }
    let home = std::env::var_os("HOME")
        .ok_or("no kubeconfig: set with.kubeconfig, $KUBECONFIG or $HOME")?;
    Ok(vec![PathBuf::from(home).join(".kube/config")])
}

/// Read one file; file paths in it are made absolute (relative to the file, as kubectl does).
fn read(path: &Path) -> Result<File, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
    // The error's location only: a snippet of the file could show a token.
    let mut file: File = serde_saphyr::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        format!(
            "kubeconfig {}{at} is not a valid kubeconfig",
            path.display()
        )
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let absolute = |p: &mut Option<String>| {
        if let Some(v) = p.as_mut()
            && !v.is_empty()
        {
            *v = dir.join(&*v).display().to_string();
        }
    };
    for c in file.clusters.iter_mut().flatten() {
        if let Some(c) = c.item.as_mut() {
            absolute(&mut c.certificate_authority);
        }
    }
    for u in file.users.iter_mut().flatten() {
        if let Some(u) = u.item.as_mut() {
            absolute(&mut u.token_file);
            absolute(&mut u.client_certificate);
            absolute(&mut u.client_key);
            if let Some(exec) = u.exec.as_mut()
                && exec.command.contains('/')
            {
                exec.command = dir.join(&exec.command).display().to_string();
            }
        }
    }
    Ok(file)
}

/// The first entry named `name` over all files.
fn find<'a, T>(entries: impl Iterator<Item = &'a Named<T>>, name: &str) -> Option<&'a T>
where
    T: 'a,
{
    entries
        .filter(|e| e.name == name)
        .find_map(|e| e.item.as_ref())
}

/// Connect to the cluster of `context` (default: the current context). `connect` bounds
/// connecting to the API server; `exec` plugins run within [`EXEC_TIMEOUT`].
pub async fn target(
    kubeconfig: Option<&str>,
    context: Option<&str>,
    dir: &Path,
    connect: Duration,
) -> Result<Target, String> {
    let paths = files(kubeconfig, dir)?;
    let read: Vec<File> = paths.iter().map(|p| read(p)).collect::<Result<_, _>>()?;
    let shown = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let name = match context {
        Some(c) => c.to_string(),
        None => read
            .iter()
            .find_map(|f| f.current_context.clone().filter(|c| !c.is_empty()))
            .ok_or_else(|| {
                format!("kubeconfig {shown} has no current-context: set with.context")
            })?,
    };
    let ctx = find(read.iter().flat_map(|f| f.contexts.iter().flatten()), &name)
        .ok_or_else(|| format!("kubeconfig {shown} has no context `{name}`"))?;
    let cluster = find(
        read.iter().flat_map(|f| f.clusters.iter().flatten()),
        &ctx.cluster,
    )
    .ok_or_else(|| {
        format!(
            "kubeconfig {shown}: context `{name}` names cluster `{}`, which it does not define",
            ctx.cluster
        )
    })?;
    let user = match &ctx.user {
        Some(u) if !u.is_empty() => find(read.iter().flat_map(|f| f.users.iter().flatten()), u)
            .cloned()
            .ok_or_else(|| format!("kubeconfig {shown}: context `{name}` names user `{u}`, which it does not define"))?,
        _ => User::default(),
    };
    let server = cluster
        .server
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            format!(
                "kubeconfig {shown}: cluster `{}` has no server",
                ctx.cluster
            )
        })?;
    let (client, auth) = client(cluster, &user, connect)
        .await
        .map_err(|e| format!("context `{name}` of kubeconfig {shown}: {e}"))?;
    Ok(Target {
        server: server.trim_end_matches('/').to_string(),
        context: name,
        namespace: ctx.namespace.clone().filter(|n| !n.is_empty()),
        client,
        auth,
    })
}

/// Inline `*-data` (base64) or a file.
fn bytes(
    data: &Option<String>,
    file: &Option<String>,
    what: &str,
) -> Result<Option<Vec<u8>>, String> {
    if let Some(data) = data.as_ref().filter(|d| !d.is_empty()) {
        let clean: String = data.split_whitespace().collect();
        return base64::engine::general_purpose::STANDARD
            .decode(clean)
            .map(Some)
            .map_err(|_| format!("{what}-data is not base64"));
    }
    match file.as_ref().filter(|f| !f.is_empty()) {
        Some(path) => std::fs::read(path)
            .map(Some)
            .map_err(|e| format!("cannot read {what} {path}: {e}")),
        None => Ok(None),
    }
}

/// The HTTP client and `Authorization` header for `cluster` as `user`.
async fn client(
    cluster: &Cluster,
    user: &User,
    connect: Duration,
) -> Result<(reqwest::Client, Option<HeaderValue>), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("kcideploy/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(connect)
        .redirect(reqwest::redirect::Policy::none());
    if cluster
        .tls_server_name
        .as_ref()
        .is_some_and(|n| !n.is_empty())
    {
        return Err(
            "tls-server-name is not supported: name the server by the name its certificate holds"
                .into(),
        );
    }
    if let Some(ca) = bytes(
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
        "certificate-authority",
    )? {
        let certs = reqwest::Certificate::from_pem_bundle(&ca)
            .map_err(|_| "certificate-authority holds no PEM certificate".to_string())?;
        builder = builder.tls_certs_only(certs);
    }
    if cluster.insecure_skip_tls_verify {
        builder = builder.danger_accept_invalid_certs(true);
    }
    if let Some(proxy) = cluster.proxy_url.as_ref().filter(|p| !p.is_empty()) {
        let proxy = reqwest::Proxy::all(proxy).map_err(|_| "proxy-url is not a URL".to_string())?;
        builder = builder.proxy(proxy);
    }
    if user.auth_provider.is_some() {
        return Err("auth-provider is not supported (kubectl dropped it too): use an exec credential plugin such as kubelogin".into());
    }
    let mut token = user.token.clone().filter(|t| !t.is_empty());
    if token.is_none()
        && let Some(path) = user.token_file.as_ref().filter(|f| !f.is_empty())
    {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read tokenFile {path}: {e}"))?;
        token = Some(text.trim().to_string());
    }
    let mut cert = bytes(
        &user.client_certificate_data,
        &user.client_certificate,
        "client-certificate",
    )?;
    let mut key = bytes(&user.client_key_data, &user.client_key, "client-key")?;
    if let Some(exec) = &user.exec {
        let got = run_exec(exec).await?;
        token = token.or(got.token);
        cert = cert.or(got.cert);
        key = key.or(got.key);
    }
    match (cert, key) {
        (Some(mut cert), Some(key)) => {
            cert.push(b'\n');
            cert.extend_from_slice(&key);
            let identity = reqwest::Identity::from_pem(&cert).map_err(|_| {
                "client-certificate and client-key are not a PEM certificate and key".to_string()
            })?;
            builder = builder.identity(identity);
        }
        (None, None) => {}
        _ => {
            return Err("a client certificate needs both client-certificate and client-key".into());
        }
    }
    let auth = match (token, &user.username, &user.password) {
        (Some(token), _, _) => Some(format!("Bearer {token}")),
        (None, Some(u), Some(p)) => Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )),
        _ => None,
    };
    let auth = auth
        .map(|a| {
            let mut value = HeaderValue::from_str(&a)
                .map_err(|_| "the token holds characters a header cannot".to_string())?;
            value.set_sensitive(true);
            Ok::<_, String>(value)
        })
        .transpose()?;
    let client = builder.build().map_err(|e| {
        format!(
            "cannot make its HTTP client: {}",
            crate::support::text::error_chain(&e)
        )
    })?;
    Ok((client, auth))
}

/// What an `exec` plugin gave.
struct ExecCredential {
    token: Option<String>,
    cert: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
}

/// Run an `exec` credential plugin as kubectl does (non-interactive) and read the
/// `ExecCredential` it prints. Its output is never shown: it holds the credential.
async fn run_exec(exec: &Exec) -> Result<ExecCredential, String> {
    let api_version = exec
        .api_version
        .clone()
        .unwrap_or_else(|| "client.authentication.k8s.io/v1".into());
    let info = serde_json::json!({
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "spec": { "interactive": false },
    });
    let mut command = tokio::process::Command::new(&exec.command);
    command
        .args(exec.args.iter().flatten())
        .env("KUBERNETES_EXEC_INFO", info.to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for var in exec.env.iter().flatten() {
        command.env(&var.name, &var.value);
    }
    let what = format!("the exec credential plugin `{}`", exec.command);
    let output = tokio::time::timeout(EXEC_TIMEOUT, command.output())
        .await
        .map_err(|_| format!("{what} did not finish within {}s", EXEC_TIMEOUT.as_secs()))?
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!(
            "{what} failed ({}): {}",
            output.status,
            crate::support::text::clip(last.trim(), 200)
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|_| format!("{what} printed no ExecCredential JSON"))?;
    let status = &value["status"];
    let text = |k: &str| {
        status[k]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let found = ExecCredential {
        token: text("token"),
        cert: text("clientCertificateData").map(String::into_bytes),
        key: text("clientKeyData").map(String::into_bytes),
    };
    if found.token.is_none() && found.cert.is_none() {
        return Err(format!(
            "{what} gave neither a token nor a client certificate"
        ));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "apiVersion: v1\nkind: Config\ncurrent-context: dev\npreferences: {}\nclusters:\n- name: c\n  cluster:\n    server: https://k.example.org:6443/\n    extensions: []\ncontexts:\n- name: dev\n  context:\n    cluster: c\n    user: u\n    namespace: kernelci-pipeline\n- name: broken\n  context:\n    cluster: nowhere\nusers:\n- name: u\n  user:\n    tokenFile: secret/token\n";

    #[tokio::test]
    async fn contexts_clusters_users_and_files_relative_to_the_kubeconfig() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("kube/secret")).expect("mkdir");
        std::fs::write(dir.path().join("kube/config"), CONFIG).expect("write");
        std::fs::write(dir.path().join("kube/secret/token"), "t0ken\n").expect("write");
        let connect = Duration::from_secs(1);
        let t = target(Some("kube/config"), None, dir.path(), connect)
            .await
            .expect("target");
        assert_eq!(t.server, "https://k.example.org:6443");
        assert_eq!(
            (t.context.as_str(), t.namespace.as_deref()),
            ("dev", Some("kernelci-pipeline"))
        );
        let auth = t.auth.expect("auth");
        assert!(auth.is_sensitive());
        assert_eq!(auth.to_str().expect("text"), "Bearer t0ken");
        let err = |context: &str| {
            let dir = dir.path().to_path_buf();
            let context = context.to_string();
            async move {
                target(Some("kube/config"), Some(&context), &dir, connect)
                    .await
                    .err()
                    .expect("an error")
            }
        };
        assert!(err("prod").await.ends_with("has no context `prod`"));
        assert!(
            err("broken")
                .await
                .ends_with("context `broken` names cluster `nowhere`, which it does not define")
        );
        std::fs::write(dir.path().join("kube/config"), "clusters: [").expect("write");
        let bad = err("dev").await;
        assert!(
            bad.contains("kube/config:") && bad.ends_with("is not a valid kubeconfig"),
            "{bad}"
        );
    }
}
