//! `http_wait`: poll a URL until it answers with the expected status (and body text).

use std::io::Write;
use std::time::Instant;

use super::{Attempt, Kind, StepCtx, StepError};
use crate::apply::process::Cancel;
use crate::config::kinds::HttpWaitWith;

pub async fn run(ctx: &mut StepCtx<'_>, with: &HttpWaitWith) -> Result<(), StepError> {
    let client = ctx.run.http_client().map_err(StepError::Failed)?;
    let limit = ctx.limit;
    let start = Instant::now();
    let mut log = ctx.log;
    // The last answer worth reporting (a request cut short by the deadline is not one).
    let mut last = String::from("no answer");
    loop {
        if *ctx.cancel.borrow() >= Cancel::Graceful {
            return Err(StepError::Cancelled);
        }
        let left = limit.saturating_sub(start.elapsed());
        let per_request = left.clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(30),
        );
        let request = client.get(&with.url).timeout(per_request);
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                let body_ok = with
                    .body_contains
                    .as_ref()
                    .is_none_or(|needle| body.contains(needle.as_str()));
                if status == with.status && body_ok {
                    let _ = writeln!(log, "{}: {status}, as expected", with.url);
                    return Ok(());
                }
                if status != with.status {
                    format!("status {status}, expected {}", with.status)
                } else {
                    format!(
                        "status {status}, but the body lacks {:?}",
                        with.body_contains.as_deref().unwrap_or("")
                    )
                }
            }
            Err(e) if e.is_timeout() && last != "no answer" => last.clone(),
            Err(e) => {
                let connect = ctx.run.config.file.timeouts.connect.0;
                let limit = (
                    per_request,
                    "a request of http_wait, within the step's timeout",
                );
                format!(
                    "no answer: {}",
                    crate::support::http::no_answer(&e, connect, limit)
                )
            }
        };
        last = answer;
        let _ = writeln!(log, "{}: {last}", with.url);
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(StepError::Failed(format!(
                "{} did not answer as expected within {} (last: {last})",
                with.url,
                crate::support::text::age(limit.as_secs() as i64)
            )));
        }
        tokio::select! {
            _ = tokio::time::sleep(with.interval.0.min(left)) => {}
            _ = crate::apply::process::cancelled(&mut ctx.cancel, Cancel::Graceful) => return Err(StepError::Cancelled),
        }
    }
}

/// `http_wait`.
pub struct HttpWait(pub HttpWaitWith);

impl Kind for HttpWait {
    fn run<'a>(&'a self, ctx: &'a mut StepCtx<'_>) -> Attempt<'a> {
        Box::pin(async move { run(ctx, &self.0).await.map(|()| None) })
    }

    fn watches_limit(&self) -> bool {
        true
    }
}
