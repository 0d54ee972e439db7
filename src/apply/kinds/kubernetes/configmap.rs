//! A ConfigMap made from every regular file under a directory, recursively (as the real
//! deploy's `find -type f` does), keyed by base name (as `kubectl create configmap
//! --from-file` keys them); text files go to `data`, others to `binaryData`. Two files with
//! one base name are refused, naming both. The ConfigMap is replaced whole in one write
//! (`PUT` of the object read, guarded by its `resourceVersion`, or `POST` when there is none
//! yet): it never goes missing, as it does between the real deploy's delete and create, and
//! keys of files that went away go away too (a server-side apply would keep the keys another
//! field manager, such as the `kubectl create` of the old deploy, owns).

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::api::Api;

/// The API server refuses a ConfigMap larger than this (1 MiB).
pub const MAX_BYTES: u64 = 1024 * 1024;

/// A ConfigMap's contents.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Contents {
    pub data: BTreeMap<String, String>,
    /// Base64, as the API carries it.
    pub binary: BTreeMap<String, String>,
}

impl Contents {
    pub fn keys(&self) -> usize {
        self.data.len() + self.binary.len()
    }

    /// SHA-256 over every key and value, for state and drift.
    pub fn digest(&self) -> String {
        let mut hash = Sha256::new();
        for (part, map) in [("data", &self.data), ("binaryData", &self.binary)] {
            for (k, v) in map {
                for piece in [part, k.as_str(), v.as_str()] {
                    hash.update(piece.as_bytes());
                    hash.update([0]);
                }
            }
        }
        format!("sha256:{}", hex::encode(hash.finalize()))
    }

    /// The contents of a ConfigMap object from the API.
    pub fn of(object: &Value) -> Contents {
        let map = |v: &Value| -> BTreeMap<String, String> {
            v.as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        };
        Contents {
            data: map(&object["data"]),
            binary: map(&object["binaryData"]),
        }
    }
}

/// Whether `key` may be a ConfigMap key: `[-._a-zA-Z0-9]+`, at most 253 characters.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// Every regular file under `dir`, recursively (symbolic links are not followed, as `find
/// -type f` lists none), in path order. `shown` names the directory in messages.
pub fn build(dir: &Path, shown: &str) -> Result<Contents, String> {
    let mut files = Vec::new();
    walk(dir, dir, shown, &mut files)?;
    files.sort();
    let mut contents = Contents::default();
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    let mut total = 0u64;
    for rel in files {
        let key = rel.rsplit('/').next().unwrap_or(&rel).to_string();
        if let Some(other) = first.get(&key) {
            return Err(format!(
                "{shown}: {shown}/{other} and {shown}/{rel} have the same base name `{key}`, \
                 and a ConfigMap key is a base name"
            ));
        }
        if !valid_key(&key) {
            return Err(format!(
                "{shown}/{rel}: `{}` cannot be a ConfigMap key (letters, digits, `-`, `_`, `.`)",
                crate::support::text::clip(&key, 80)
            ));
        }
        let bytes =
            std::fs::read(dir.join(&rel)).map_err(|e| format!("cannot read {shown}/{rel}: {e}"))?;
        total += bytes.len() as u64;
        match String::from_utf8(bytes) {
            Ok(text) => contents.data.insert(key.clone(), text),
            Err(e) => contents.binary.insert(
                key.clone(),
                base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
            ),
        };
        first.insert(key, rel);
    }
    if contents.keys() == 0 {
        return Err(format!("{shown} holds no file"));
    }
    if total > MAX_BYTES {
        return Err(format!(
            "{shown}: its files hold {total} bytes, more than the {MAX_BYTES} a ConfigMap may"
        ));
    }
    Ok(contents)
}

fn walk(root: &Path, dir: &Path, shown: &str, out: &mut Vec<String>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        let rel = dir.strip_prefix(root).unwrap_or(dir).display().to_string();
        format!("cannot list {shown}/{rel}: {e}")
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {shown}: {e}"))?;
        let kind = entry
            .file_type()
            .map_err(|e| format!("cannot list {shown}: {e}"))?;
        let path = entry.path();
        if kind.is_dir() {
            walk(root, &path, shown, out)?;
        } else if kind.is_file() {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let rel = rel
                .to_str()
                .ok_or_else(|| format!("{shown}/{}: not a UTF-8 file name", rel.display()))?;
            out.push(rel.replace('\\', "/"));
        }
    }
    Ok(())
}

/// What [`replace`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    Replaced,
    Unchanged,
}

impl Written {
    pub fn as_str(self) -> &'static str {
        match self {
            Written::Created => "created",
            Written::Replaced => "replaced",
            Written::Unchanged => "unchanged",
        }
    }
}

/// Make ConfigMap `namespace/name` hold exactly `contents`, in one write.
pub async fn replace(
    api: &Api,
    namespace: &str,
    name: &str,
    contents: &Contents,
    field_manager: &str,
) -> Result<Written, String> {
    let collection = format!("/api/v1/namespaces/{namespace}/configmaps");
    let path = format!("{collection}/{name}");
    let query = format!("?fieldManager={field_manager}");
    // A write that loses a race (409) reads again; a few times at most.
    for _ in 0..5 {
        let existing = api.get(&path).await?;
        let body = match &existing {
            None => json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": { "name": name, "namespace": namespace },
            }),
            Some(found) if Contents::of(found) == *contents => return Ok(Written::Unchanged),
            Some(found) => {
                let mut object = found.clone();
                if let Some(meta) = object["metadata"].as_object_mut() {
                    meta.remove("managedFields");
                }
                object
            }
        };
        let mut body = body;
        body["data"] = json!(contents.data);
        body["binaryData"] = json!(contents.binary);
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let (method, target, written) = match existing {
            None => (
                Method::POST,
                format!("{collection}{query}"),
                Written::Created,
            ),
            Some(_) => (Method::PUT, format!("{path}{query}"), Written::Replaced),
        };
        match api
            .call(method, &target, Some(("application/json", bytes)))
            .await
        {
            Ok(_) => return Ok(written),
            Err(e) if e.status == 409 => continue,
            Err(e) => return Err(e.message),
        }
    }
    Err(format!(
        "ConfigMap {namespace}/{name}: every write lost a race with another writer (409 Conflict)"
    ))
}
