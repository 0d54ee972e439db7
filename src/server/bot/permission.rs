//! Who may command the bot: a maintainer by numeric GitHub user id (`server.maintainers`; a
//! login can be renamed or taken over, an id cannot), or a commenter whose
//! `author_association` is in `server.maintainer_associations`.

use crate::config::ServerConfig;

/// Whether the author of a comment (`author_id`, `association` from the webhook payload) may
/// command the bot. The login is never compared.
pub(super) fn permitted(server: &ServerConfig, author_id: u64, association: &str) -> bool {
    let by_id = author_id != 0 && server.maintainers.iter().any(|m| m.id == author_id);
    by_id
        || server
            .maintainer_associations
            .iter()
            .any(|a| a.as_str() == association)
}

/// Maintainers whose id is the placeholder `0`: they cannot command the bot yet.
pub(in crate::server) fn placeholders(server: &ServerConfig) -> Vec<&str> {
    server
        .maintainers
        .iter()
        .filter(|m| m.id == 0)
        .map(|m| m.login.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Association, Maintainer};

    fn server() -> ServerConfig {
        ServerConfig {
            maintainers: vec![
                Maintainer {
                    login: "alice".into(),
                    id: 101,
                },
                Maintainer {
                    login: "later".into(),
                    id: 0,
                },
            ],
            maintainer_associations: vec![Association::Owner],
            ..ServerConfig::default()
        }
    }

    #[test]
    fn by_id_or_association_never_by_login() {
        let s = server();
        let cases = [
            (101, "NONE", true),
            (101, "CONTRIBUTOR", true),
            (102, "MEMBER", false),
            (102, "OWNER", true),
            // A placeholder id matches nobody, not even a payload without an id.
            (0, "NONE", false),
        ];
        for (id, association, expected) in cases {
            assert_eq!(
                permitted(&s, id, association),
                expected,
                "{id} {association}"
            );
        }
        assert_eq!(placeholders(&s), ["later"]);
    }
}
