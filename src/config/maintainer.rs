//! `server.maintainers`: who may command the bot, by numeric GitHub user id.

use schemars::JsonSchema;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// A GitHub user who may command the bot. The numeric user id decides (a login can be
/// renamed, and another account can take the old name; an id never changes); the login is
/// for people reading the plan file and for messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Maintainer {
    /// GitHub login, for display only (`nuclearcat`).
    pub login: String,
    /// Numeric GitHub user id: `id` of `https://api.github.com/users/<login>` (or
    /// `gh api users/<login> --jq .id`). `0` is a placeholder that matches nobody.
    pub id: u64,
}

/// How to find a login's id, for error messages.
fn how_to_find(login: &str) -> String {
    format!("its numeric GitHub user id is `id` of https://api.github.com/users/{login}")
}

impl<'de> Deserialize<'de> for Maintainer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MaintainerVisitor)
    }
}

struct MaintainerVisitor;

impl<'de> Visitor<'de> for MaintainerVisitor {
    type Value = Maintainer;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a maintainer `{ login: LOGIN, id: NUMBER }`")
    }

    /// The old form, a bare login.
    fn visit_str<E: de::Error>(self, login: &str) -> Result<Maintainer, E> {
        Err(E::custom(format!(
            "maintainer `{login}` is named by login only: maintainers are named by their \
             numeric GitHub user id, which a rename cannot change; write \
             `{{ login: {login}, id: NUMBER }}` ({})",
            how_to_find(login)
        )))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Maintainer, A::Error> {
        let mut login: Option<String> = None;
        let mut id: Option<u64> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "login" if login.is_none() => login = Some(map.next_value()?),
                "id" if id.is_none() => id = Some(map.next_value()?),
                "login" | "id" => return Err(de::Error::duplicate_field("login or id")),
                other => return Err(de::Error::unknown_field(other, &["login", "id"])),
            }
        }
        match (login, id) {
            (Some(login), Some(id)) => Ok(Maintainer { login, id }),
            (Some(login), None) => Err(de::Error::custom(format!(
                "maintainer `{login}` has no `id`: add `id: NUMBER` ({})",
                how_to_find(&login)
            ))),
            (None, _) => Err(de::Error::custom(
                "a maintainer needs `login` (for display) and `id` (its numeric GitHub user id)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    fn load(server: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "version: 1\nname: t\nrepos:\n  core: {{ url: /tmp/core.git }}\nserver:\n{server}"
        );
        Config::from_str(Path::new("plan.yaml"), text)
    }

    fn error(server: &str) -> String {
        match load(server) {
            Ok(_) => panic!("loads: {server}"),
            Err(e) => e.errors().iter().map(|e| e.message.as_str()).collect(),
        }
    }

    #[test]
    fn ids_load_and_old_or_incomplete_forms_are_located_errors() {
        let config = load(
            "  maintainers:\n    - { login: nuclearcat, id: 1234 }\n    - login: a-wai\n      id: 0\n",
        )
        .expect("loads");
        let m = &config.file.server.maintainers;
        assert_eq!((m[0].login.as_str(), m[0].id), ("nuclearcat", 1234));
        assert_eq!((m[1].login.as_str(), m[1].id), ("a-wai", 0));

        let e = error("  maintainers: [alice, bob]\n");
        assert!(
            e.starts_with("plan.yaml:6:17: maintainer `alice` is named by login only"),
            "{e}"
        );
        assert!(e.contains("write `{ login: alice, id: NUMBER }`"), "{e}");
        assert!(e.contains("https://api.github.com/users/alice"), "{e}");

        let e = error("  maintainers:\n    - { login: alice, id: 1 }\n    - { login: bob }\n");
        assert!(
            e.starts_with("plan.yaml:8:") && e.contains("maintainer `bob` has no `id`"),
            "{e}"
        );
        let e = error("  maintainers:\n    - { login: alice, id: alice }\n");
        assert!(e.starts_with("plan.yaml:7:"), "{e}");
        let e = error("  maintainers:\n    - { login: alice, id: 1, name: Alice }\n");
        assert!(e.contains("unknown field `name`"), "{e}");
    }
}
