//! The status pages for people: `GET /` (now, why not yet, changes, blame and exclusions,
//! the pipe cleaner, recent runs), `/runs` (history), `/runs/{id}` (a run with every step's
//! log), `/events` (server-sent events: the live part of `/` again whenever it changes) and
//! `/status` (JSON). Read-only; with `server.status_token_env` they need the token
//! ([`auth`]). Styles and script are embedded ([`html`]): no external assets.

mod auth;
mod history;
pub mod html;
mod now;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use jiff::Timestamp;

use super::hub::Hub;
use html::{Nav, esc, page};
use now::Deployed;

/// How often `/events` looks for a change.
const TICK: Duration = Duration::from_millis(500);

/// An `/events` stream ends after this (the browser reconnects), so a stopping server never
/// waits long for it.
const STREAM_LIFETIME: Duration = Duration::from_secs(300);

/// Without JavaScript, `/` reloads itself this often (seconds).
const REFRESH: u32 = 5;

/// The routes of the pages.
pub(super) fn router(hub: Arc<Hub>) -> axum::Router {
    axum::Router::new()
        .route("/", get(main_page))
        .route("/status", get(status))
        .route("/runs", get(runs_page))
        .route("/runs/{id}", get(run_page))
        .route("/events", get(events))
        .with_state(hub)
}

fn state_of(hub: &Hub) -> Result<crate::state::State, String> {
    match hub.backend.read() {
        Ok(s) => Ok(s.unwrap_or_default()),
        Err(e) => Err(format!("cannot read the state: {e}")),
    }
}

fn deployed(state: &crate::state::State) -> Deployed {
    state
        .repos
        .iter()
        .flat_map(|(r, rs)| {
            rs.included
                .iter()
                .map(move |c| (r.clone(), c.id.clone(), c.head.clone()))
        })
        .collect()
}

/// The live part, from the shared status and state.
fn live(hub: &Hub, now: Timestamp) -> String {
    let status = hub.status().clone();
    let deployed = state_of(hub).map(|s| deployed(&s)).unwrap_or_default();
    now::live(&status, &hub.runs_dir(), &deployed, now)
}

async fn main_page(State(hub): State<Arc<Hub>>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(r) = auth::refusal(&hub, &headers, &uri) {
        return r;
    }
    let now = Timestamp::now();
    let mut body = format!("<div id=\"live\">{}</div>", live(&hub, now));
    match state_of(&hub) {
        Ok(state) => {
            history::exclusions(&mut body, &state, now);
            history::pipe_cleaner(&mut body, &hub.config, &state, &hub.runs_dir());
            history::history(&mut body, &state, &|id| hub.triggers.get(id), 5, now);
            body.push_str("<p><a href=\"/runs\">All runs</a></p>");
        }
        Err(e) => body.push_str(&format!("<p class=\"s-error\">{}</p>", esc(&e))),
    }
    let plan = &hub.config.file.name;
    Html(page(plan, "now", Nav::Now, &body, Some(REFRESH))).into_response()
}

async fn runs_page(State(hub): State<Arc<Hub>>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(r) = auth::refusal(&hub, &headers, &uri) {
        return r;
    }
    let now = Timestamp::now();
    let mut body = String::new();
    match state_of(&hub) {
        Ok(state) => history::history(
            &mut body,
            &state,
            &|id| hub.triggers.get(id),
            crate::state::HISTORY_KEEP + 1,
            now,
        ),
        Err(e) => body.push_str(&format!("<p class=\"s-error\">{}</p>", esc(&e))),
    }
    let plan = &hub.config.file.name;
    Html(page(plan, "history", Nav::History, &body, None)).into_response()
}

async fn run_page(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Some(r) = auth::refusal(&hub, &headers, &uri) {
        return r;
    }
    let now = Timestamp::now();
    let plan = &hub.config.file.name;
    let body = match state_of(&hub) {
        Ok(state) => history::run_page(&state, &id, &hub.runs_dir(), hub.triggers.get(&id), now),
        Err(e) => Some(format!("<p class=\"s-error\">{}</p>", esc(&e))),
    };
    match body {
        Some(body) => {
            Html(page(plan, &format!("run {id}"), Nav::History, &body, None)).into_response()
        }
        None => {
            let body = format!("<p>No run {} in state.</p>", esc(&id));
            (
                StatusCode::NOT_FOUND,
                Html(page(plan, "no such run", Nav::History, &body, None)),
            )
                .into_response()
        }
    }
}

/// JSON, or the main page for a browser that asks for HTML.
async fn status(State(hub): State<Arc<Hub>>, headers: HeaderMap, uri: Uri) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html {
        return main_page(State(hub), headers, uri).await;
    }
    if let Some(r) = auth::refusal(&hub, &headers, &uri) {
        return r;
    }
    let status = hub.status().clone();
    match serde_json::to_string_pretty(&status) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            text + "\n",
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The live part of `/`, sent again whenever it changes.
async fn events(State(hub): State<Arc<Hub>>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(r) = auth::refusal(&hub, &headers, &uri) {
        return r;
    }
    let until = tokio::time::Instant::now() + STREAM_LIFETIME;
    let stream =
        futures_util::stream::unfold((hub, String::new()), move |(hub, last)| async move {
            loop {
                if tokio::time::Instant::now() >= until {
                    return None;
                }
                let html = live(&hub, Timestamp::now());
                if html != last {
                    let event = Event::default().data(&html);
                    return Some((Ok::<_, Infallible>(event), (hub, html)));
                }
                tokio::time::sleep(TICK).await;
            }
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[cfg(test)]
mod tests;
