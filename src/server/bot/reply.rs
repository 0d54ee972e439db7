//! Posting the bot's answers on the PR.

use crate::server::worker::Worker;

impl Worker {
    /// Post `text` as a comment on PR `number`; a failure is logged, never retried.
    pub(super) async fn reply(&self, full_name: &str, number: u64, text: &str) {
        let Some(gh) = &self.github else {
            tracing::warn!("{full_name}#{number}: no GitHub token; reply not posted: {text}");
            return;
        };
        let body = serde_json::json!({ "body": text });
        if let Err(e) = gh
            .post(
                &format!("/repos/{full_name}/issues/{number}/comments"),
                &body,
            )
            .await
        {
            tracing::warn!("{full_name}#{number}: cannot reply: {e}");
        }
    }
}
