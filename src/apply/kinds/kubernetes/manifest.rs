//! Manifests: files (or directories of them) read into objects in the order given, each
//! file's YAML documents in order (`kind: List` expanded), and the image pinning of their
//! Deployments. YAML is read as kubectl reads it (YAML 1.1 booleans and `0644` octals); a
//! key written twice in one mapping keeps its last value, as kubectl does, with a warning
//! naming the file, line and column.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_json::Value;

use crate::config::kubernetes::FIRST_CONTAINER;

/// A YAML error's message, without serde-saphyr's snippet of the file (a manifest may hold
/// a Secret), clipped.
fn yaml_message(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::MessageFormatter;
    let e = e.without_snippet();
    if let serde_saphyr::Error::DuplicateMappingKey { key, .. } = e {
        let key = key.as_deref().unwrap_or("?");
        return format!(
            "key `{}` is written twice in one mapping",
            crate::support::text::clip(key, 80)
        );
    }
    let text = serde_saphyr::DefaultMessageFormatter.format_message(e);
    crate::support::text::clip(text.trim(), 200)
}

/// One object of a manifest file.
#[derive(Debug, Clone)]
pub struct Object {
    /// The file, as written in the plan (`kube/aks/trigger.yaml`), for messages.
    pub file: String,
    /// Line where its document starts.
    pub line: u64,
    pub value: Value,
}

impl Object {
    pub fn api_version(&self) -> &str {
        self.value["apiVersion"].as_str().unwrap_or("")
    }
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }
    pub fn namespace(&self) -> Option<&str> {
        self.value["metadata"]["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
    }
    /// `file:line`, for messages.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
    pub fn is_deployment(&self) -> bool {
        self.kind() == "Deployment" && self.api_version() == "apps/v1"
    }
}

/// The files an entry of `manifests` names: itself, or a directory's `.yaml`, `.yml` and
/// `.json` files in name order (not recursive, as `kubectl apply -f DIR`).
fn files_of(base: &Path, entry: &str) -> Result<Vec<(String, PathBuf)>, String> {
    let path = base.join(entry);
    let meta = std::fs::metadata(&path)
        .map_err(|e| format!("manifest {entry} ({}): {e}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![(entry.to_string(), path)]);
    }
    let mut names: Vec<String> = std::fs::read_dir(&path)
        .map_err(|e| format!("cannot list manifest directory {entry}: {e}"))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml") || n.ends_with(".json"))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(format!(
            "manifest directory {entry} holds no .yaml, .yml or .json file"
        ));
    }
    Ok(names
        .into_iter()
        .map(|n| (format!("{}/{n}", entry.trim_end_matches('/')), path.join(n)))
        .collect())
}

/// Every object of `entries` (relative to `base`), in order. `warn` hears about duplicate
/// keys.
pub fn read(
    base: &Path,
    entries: &[String],
    warn: &mut dyn FnMut(String),
) -> Result<Vec<Object>, String> {
    let mut out = Vec::new();
    for entry in entries {
        for (shown, path) in files_of(base, entry)? {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read manifest {shown}: {e}"))?;
            for (line, value) in documents(&shown, &text, warn)? {
                expand(&shown, line, value, &mut out)?;
            }
        }
    }
    Ok(out)
}

/// The YAML options kubectl's reading matches.
fn options(duplicate_keys: serde_saphyr::DuplicateKeyPolicy) -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.duplicate_keys = duplicate_keys;
    options.legacy_octal_numbers = true;
    options.with_snippet = false;
    options
}

/// A file's non-empty documents with the line each starts on.
fn documents(
    shown: &str,
    text: &str,
    warn: &mut dyn FnMut(String),
) -> Result<Vec<(u64, Value)>, String> {
    use serde_saphyr::{DuplicateKeyPolicy, Spanned};
    let at = |e: &serde_saphyr::Error| {
        e.location()
            .map(|l| format!("{shown}:{}:{}", l.line(), l.column()))
            .unwrap_or_else(|| shown.to_string())
    };
    let parsed = serde_saphyr::from_multiple_with_options::<Spanned<Value>>(
        text,
        options(DuplicateKeyPolicy::Error),
    );
    let docs = match parsed {
        Ok(docs) => docs,
        Err(e)
            if matches!(
                e.without_snippet(),
                serde_saphyr::Error::DuplicateMappingKey { .. }
            ) =>
        {
            warn(format!(
                "warning: {}: {}; the last value is used, as kubectl does",
                at(&e),
                yaml_message(&e)
            ));
            serde_saphyr::from_multiple_with_options::<Spanned<Value>>(
                text,
                options(DuplicateKeyPolicy::LastWins),
            )
            .map_err(|e| format!("{}: {}", at(&e), yaml_message(&e)))?
        }
        Err(e) => return Err(format!("{}: {}", at(&e), yaml_message(&e))),
    };
    Ok(docs
        .into_iter()
        .filter(|d| !d.value.is_null())
        .map(|d| (d.referenced.line(), d.value))
        .collect())
}

/// One document's objects: itself, or a `List`'s items; each checked for what apply needs.
fn expand(shown: &str, line: u64, value: Value, out: &mut Vec<Object>) -> Result<(), String> {
    let at = format!("{shown}:{line}");
    if !value.is_object() {
        return Err(format!("{at}: a manifest document must be a mapping"));
    }
    if value["kind"] == "List" || value["kind"].as_str().is_some_and(|k| k.ends_with("List")) {
        for item in value["items"].as_array().into_iter().flatten() {
            expand(shown, line, item.clone(), out)?;
        }
        return Ok(());
    }
    let object = Object {
        file: shown.to_string(),
        line,
        value,
    };
    for (field, found) in [
        ("apiVersion", object.api_version()),
        ("kind", object.kind()),
        ("metadata.name", object.name()),
    ] {
        if found.is_empty() {
            return Err(format!("{at}: the object has no {field}"));
        }
    }
    out.push(object);
    Ok(())
}

/// A `pin_images` value resolved in its registry.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// As written (`kernelci/kernelci:pipeline`).
    pub tag: String,
    pub digest: String,
    /// `kernelci/kernelci:pipeline@sha256:...`.
    pub image: String,
}

/// One pinned container.
#[derive(Debug, Clone)]
pub struct Pinned {
    /// `kernelci-pipeline/scheduler-k8s`.
    pub deployment: String,
    pub container: String,
    /// What the manifest had.
    pub was: String,
    /// The `pin_images` value (`kernelci/kernelci:pipeline`).
    pub tag: String,
    pub digest: String,
    /// `kernelci/kernelci:pipeline@sha256:...`, now in the object.
    pub image: String,
}

/// Write the pinned images into the Deployments: a container named in `pins` gets that
/// image, else the first container gets `first_container`'s. Init containers are left as
/// they are. `pins` maps a `pin_images` key to its image; `namespace` gives the namespace
/// each object lands in. A container name no Deployment has is an error.
pub fn pin(
    objects: &mut [Object],
    pins: &IndexMap<String, Resolved>,
    namespace: &dyn Fn(&Object) -> String,
) -> Result<Vec<Pinned>, String> {
    let mut done = Vec::new();
    let mut used: Vec<&str> = Vec::new();
    for object in objects.iter_mut().filter(|o| o.is_deployment()) {
        let deployment = format!("{}/{}", namespace(object), object.name());
        let at = object.at();
        let Some(containers) =
            object.value["spec"]["template"]["spec"]["containers"].as_array_mut()
        else {
            return Err(format!(
                "{at}: Deployment {deployment} has no spec.template.spec.containers"
            ));
        };
        for (i, container) in containers.iter_mut().enumerate() {
            let name = container["name"].as_str().unwrap_or("").to_string();
            let key = match (pins.contains_key(&name), i) {
                (true, _) => name.as_str(),
                (false, 0) if pins.contains_key(FIRST_CONTAINER) => FIRST_CONTAINER,
                _ => continue,
            };
            let Some((key, pin)) = pins.get_key_value(key) else {
                continue;
            };
            used.push(key.as_str());
            let was = container["image"].as_str().unwrap_or("").to_string();
            container["image"] = Value::String(pin.image.clone());
            done.push(Pinned {
                deployment: deployment.clone(),
                container: name,
                was,
                tag: pin.tag.clone(),
                digest: pin.digest.clone(),
                image: pin.image.clone(),
            });
        }
    }
    if let Some(unused) = pins.keys().find(|k| !used.contains(&k.as_str())) {
        return Err(match unused.as_str() {
            FIRST_CONTAINER => {
                "with.pin_images.first_container: the manifests hold no Deployment".into()
            }
            name => format!(
                "with.pin_images.{name}: no Deployment of the manifests has a container named {name}"
            ),
        });
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
    }

    #[test]
    fn directories_in_name_order_documents_in_order_lists_expanded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cm = |n: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {n}\n");
        write(
            dir.path(),
            &[
                (
                    "kube/b.yaml",
                    &format!("# comment\n---\n{}---\n{}", cm("b1"), cm("b2")),
                ),
                ("kube/a.yml", &cm("a")),
                ("kube/notes.txt", "not a manifest"),
                ("kube/sub/c.yaml", &cm("c")),
                (
                    "list.json",
                    r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}]}"#,
                ),
                (
                    "octal.yaml",
                    "apiVersion: v1\nkind: X\nmetadata:\n  name: o\nmode: 0644\non: yes\n",
                ),
            ],
        );
        let entries = [
            "list.json".to_string(),
            "kube".to_string(),
            "octal.yaml".to_string(),
        ];
        let objects = read(dir.path(), &entries, &mut |w| panic!("{w}")).expect("read");
        let names: Vec<(&str, &str)> = objects
            .iter()
            .map(|o| (o.file.as_str(), o.name()))
            .collect();
        assert_eq!(
            names,
            [
                ("list.json", "s"),
                ("kube/a.yml", "a"),
                ("kube/b.yaml", "b1"),
                ("kube/b.yaml", "b2"),
                ("octal.yaml", "o")
            ]
        );
        assert_eq!((objects[2].line, objects[3].line), (3, 8));
        // As kubectl reads YAML (1.1): `0644` is octal, `yes` a boolean.
        assert_eq!(objects[4].value["mode"], 420);
        assert_eq!(objects[4].value["on"], true);
    }

    #[test]
    fn what_apply_cannot_use_is_an_error_naming_the_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            &[
                (
                    "noname.yaml",
                    "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
                ),
                ("bad.yaml", "a: [1\n"),
                ("empty", ""),
            ],
        );
        let err =
            |entry: &str| read(dir.path(), &[entry.to_string()], &mut |_| {}).expect_err(entry);
        assert_eq!(
            err("noname.yaml"),
            "noname.yaml:2: the object has no metadata.name"
        );
        assert!(
            err("bad.yaml").starts_with("bad.yaml:"),
            "{}",
            err("bad.yaml")
        );
        assert!(
            err("missing.yaml").starts_with("manifest missing.yaml ("),
            "{}",
            err("missing.yaml")
        );
        std::fs::create_dir(dir.path().join("none")).expect("mkdir");
        assert_eq!(
            err("none"),
            "manifest directory none holds no .yaml, .yml or .json file"
        );
    }
}
