//! What each step will do, resolved: its `with:` settings flattened to `key: value` lines with
//! the plan's variables substituted (`${repos.<name>.sha}`, `.base`, `.branch`, `${cycle}`,
//! `${plan}`), secrets masked, and a Docker step's `docker_host` when the plan names one. The plan shows them under each step, `plan --json` carries them,
//! state keeps those of each step's last success, and the next plan shows what changed
//! against it (`~ key: old -> new`, a unified diff for multi-line values).

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::types::RepoPlan;
use crate::config::{Config, Cycle};

/// A step's resolved settings: dotted key → value as text.
pub type Params = BTreeMap<String, String>;

/// What a masked value shows.
pub const MASKED: &str = "(masked)";

/// One setting that differs from the step's last successful run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamChange {
    pub key: String,
    /// `None`: the setting is new.
    pub old: Option<String>,
    /// `None`: the setting is gone.
    pub new: Option<String>,
}

/// The variables a step's settings may use, at planning time.
pub struct Vars<'a> {
    pub repos: &'a IndexMap<String, RepoPlan>,
    pub cycle: Cycle,
    pub plan: &'a str,
}

impl Vars<'_> {
    /// Replace `${repos.<name>.sha}`, `${repos.<name>.base}`, `${repos.<name>.branch}`,
    /// `${cycle}` and `${plan}` in `text`.
    pub fn substitute(&self, text: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{text}`"))?;
            out.push_str(&self.value(&after[..end])?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// [`Vars::substitute`] for text that may hold other `${...}` too (a shell script's
    /// `${HOME}`): only kcideploy's variables are replaced, the rest is left as written.
    pub fn substitute_known(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            match self.value(&after[..end]) {
                Ok(value) => out.push_str(&value),
                Err(_) => out.push_str(&rest[start..start + 2 + end + 1]),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn value(&self, key: &str) -> Result<String, String> {
        Ok(match key.split('.').collect::<Vec<_>>().as_slice() {
            ["cycle"] => self.cycle.as_str().to_string(),
            ["plan"] => self.plan.to_string(),
            ["repos", repo, field] => {
                let r = self
                    .repos
                    .get(*repo)
                    .ok_or_else(|| format!("`${{{key}}}`: no repo `{repo}` in the plan"))?;
                match *field {
                    "sha" => r.staging.clone(),
                    "base" => r.base.clone(),
                    "branch" => r.base_branch.clone(),
                    other => {
                        return Err(format!(
                            "`${{{key}}}`: unknown field `{other}` (sha, base, branch)"
                        ));
                    }
                }
            }
            _ => {
                return Err(format!(
                    "unknown variable `${{{key}}}` (repos.<name>.sha, repos.<name>.base, cycle, plan)"
                ));
            }
        })
    }
}

/// Step `name`'s resolved settings.
pub fn of_step(config: &Config, vars: &Vars<'_>, name: &str) -> Params {
    let mut out = Params::new();
    let Some(step) = config.file.steps.get(name) else {
        return out;
    };
    for (key, value) in &step.with.value {
        flatten(vars, key, value, &mut out);
    }
    // The daemon the plan names: moving a step to another host is a visible change.
    if crate::config::docker::uses_docker(step.kind.value)
        && let Some(host) = config.docker_host(name).shown()
    {
        out.insert("docker_host".into(), host);
    }
    let passed: Vec<String> = out
        .iter()
        .filter(|(k, _)| k.starts_with("pass_env"))
        .map(|(_, v)| v.clone())
        .collect();
    for (key, value) in out.iter_mut() {
        let leaf = key.rsplit('.').next().unwrap_or(key);
        let under_env = key.starts_with("env.") || key.contains(".env.");
        if under_env && (secret_name(leaf) || passed.iter().any(|p| p == leaf)) {
            *value = MASKED.to_string();
        }
    }
    out
}

/// Whether a variable's name says it holds a secret.
pub fn secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "CREDENTIAL",
        "PRIVATE",
        "API_KEY",
        "APIKEY",
    ]
    .iter()
    .any(|w| upper.contains(w))
}

fn flatten(vars: &Vars<'_>, prefix: &str, value: &Value, out: &mut Params) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                flatten(vars, &key(k), v, out);
            }
        }
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            let words: Vec<String> = items.iter().map(|i| scalar(vars, i)).collect();
            let text = if prefix.ends_with("run") {
                words
                    .iter()
                    .map(|w| shell_word(w))
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                format!("[{}]", words.join(", "))
            };
            out.insert(prefix.to_string(), text);
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(vars, &key(&i.to_string()), item, out);
            }
        }
        Value::Null => {}
        other => {
            out.insert(prefix.to_string(), scalar(vars, other));
        }
    }
}

fn scalar(vars: &Vars<'_>, value: &Value) -> String {
    match value {
        Value::String(s) => vars.substitute_known(s),
        other => other.to_string(),
    }
}

/// A word as a POSIX shell would need it quoted to read it back as one word.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// What differs between the settings of the last success (`old`) and now (`new`).
pub fn changes(old: &Params, new: &Params) -> Vec<ParamChange> {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| ParamChange {
            key: k.clone(),
            old: old.get(k).cloned(),
            new: new.get(k).cloned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("kci"), "kci");
        assert_eq!(shell_word("--arch=arm64"), "--arch=arm64");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn changes_list_new_gone_and_different_keys_only() {
        let old = Params::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]);
        let new = Params::from([
            ("b".to_string(), "3".to_string()),
            ("c".to_string(), "4".to_string()),
        ]);
        let keys: Vec<(String, Option<String>, Option<String>)> = changes(&old, &new)
            .into_iter()
            .map(|c| (c.key, c.old, c.new))
            .collect();
        assert_eq!(
            keys,
            [
                ("a".into(), Some("1".into()), None),
                ("b".into(), Some("2".into()), Some("3".into())),
                ("c".into(), None, Some("4".into())),
            ]
        );
    }
}
