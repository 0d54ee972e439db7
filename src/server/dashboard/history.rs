//! What the state file says: exclusions and the last bisection, the pipe cleaner's last
//! comparison, the history of runs and a page per run with every step's log.

use std::fmt::Write;
use std::path::Path;

use jiff::Timestamp;

use super::html::{ago, clock, esc, esc_pre, ms, read_tail, span, tail};
use crate::config::{Config, StepKind};
use crate::state::{RunRecord, State, StepResult};

/// Bytes of each step's log on a run's page.
const RUN_LOG_BYTES: u64 = 64 * 1024;

/// Current exclusions with their evidence, and the last bisection.
pub fn exclusions(out: &mut String, state: &State, now: Timestamp) {
    out.push_str("<section id=\"exclusions\"><h2>Blame and exclusions</h2>");
    if state.exclusions.is_empty() {
        out.push_str("<p>No change is excluded.</p>");
    } else {
        out.push_str(
            "<div class=\"scroll\"><table><thead><tr><th>change</th><th>repo</th><th>head</th>\
             <th>failing step</th><th>since</th><th>evidence</th></tr></thead><tbody>",
        );
        for e in &state.exclusions {
            let _ = write!(
                out,
                "<tr><th scope=\"row\">{change}</th><td>{repo}</td><td><code>{head}</code></td>\
                 <td>{step}</td><td>{since} (run <a href=\"/runs/{run}\">{run}</a>)</td>\
                 <td>{detail}{log}</td></tr>",
                change = esc(&e.change),
                repo = esc(&e.repo),
                head = esc(e.head.get(..12).unwrap_or(&e.head)),
                step = esc(&e.step),
                since = ago(e.at, now),
                run = esc(&e.run_id),
                detail = esc(&e.detail),
                log = e
                    .log_tail
                    .as_deref()
                    .map(|t| format!("<pre>{}</pre>", esc_pre(tail(t, 12, 4096))))
                    .unwrap_or_default(),
            );
        }
        out.push_str("</tbody></table></div>");
    }
    if let Some(b) = state.blames.last() {
        let _ = write!(
            out,
            "<p>Last bisection: step <b>{step}</b>, {ago}, {rounds} round(s), {verdict}: {summary}</p>",
            step = esc(&b.step),
            ago = ago(b.at, now),
            rounds = b.rounds.len(),
            verdict = esc(b.verdict.as_str()),
            summary = esc(&b.summary),
        );
    }
    out.push_str("</section>");
}

/// The pipe cleaner steps' last summaries and their comparison with the previous revision.
pub fn pipe_cleaner(out: &mut String, config: &Config, state: &State, runs_dir: &Path) {
    let steps: Vec<&String> = config
        .file
        .steps
        .iter()
        .filter(|(_, s)| s.kind.value == StepKind::PipeCleaner)
        .map(|(n, _)| n)
        .collect();
    if steps.is_empty() {
        return;
    }
    out.push_str("<section id=\"pipe-cleaner\"><h2>Pipe cleaner</h2>");
    for name in steps {
        let _ = write!(out, "<h3>{}</h3>", esc(name));
        let outputs = state.steps.get(name).and_then(|r| r.outputs.as_ref());
        let summaries = outputs.map(|o| o.get("summaries").unwrap_or(o));
        match summaries
            .and_then(|s| s.as_object())
            .filter(|m| !m.is_empty())
        {
            Some(trees) => {
                out.push_str(
                    "<div class=\"scroll\"><table><thead><tr><th>tree</th><th>builds</th>\
                     <th>build pass/fail</th><th>test pass/fail</th></tr></thead><tbody>",
                );
                for (tree, v) in trees {
                    let n = |k: &str, f: &str| v[k][f].as_f64().unwrap_or(0.0);
                    let _ = write!(
                        out,
                        "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}/{}</td><td>{}/{}</td></tr>",
                        esc(tree),
                        n("kbuild", "total"),
                        n("kbuild", "pass"),
                        n("kbuild", "fail"),
                        n("test", "pass"),
                        n("test", "fail"),
                    );
                }
                out.push_str("</tbody></table></div>");
            }
            None => out.push_str("<p>No summary yet.</p>"),
        }
        if let Some(text) = comparison(state, name, runs_dir) {
            let _ = write!(out, "<pre>{}</pre>", esc_pre(&text));
        }
    }
    out.push_str("</section>");
}

/// The last comparison the step made: the regression it failed on, or the table of its log.
fn comparison(state: &State, step: &str, runs_dir: &Path) -> Option<String> {
    let (run, s) = state
        .history
        .iter()
        .rev()
        .find_map(|r| r.steps.iter().find(|s| s.name == step).map(|s| (r, s)))?;
    if s.result == StepResult::Failed {
        return s.detail.clone();
    }
    let log = read_tail(&log_path(runs_dir, &run.id, step)?, RUN_LOG_BYTES)?;
    let start = log.rfind("no regression against")?;
    let text: Vec<&str> = log[start..]
        .lines()
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with('|'))
        .map(|(_, l)| l)
        .collect();
    Some(text.join("\n"))
}

/// A run's step log, if the run id and step name make a path inside `runs_dir`.
pub fn log_path(runs_dir: &Path, run_id: &str, step: &str) -> Option<std::path::PathBuf> {
    let safe = |s: &str| !s.is_empty() && !s.starts_with('.') && !s.contains(['/', '\\', '\0']);
    let file = format!("{}.log", crate::config::names::file_name(step));
    (safe(run_id) && safe(&file)).then(|| runs_dir.join(run_id).join(file))
}

/// The failed steps of a run.
fn failed(run: &RunRecord) -> String {
    run.steps
        .iter()
        .filter(|s| s.result == StepResult::Failed)
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The last `limit` runs, newest first.
pub fn history(
    out: &mut String,
    state: &State,
    trigger: &dyn Fn(&str) -> Option<String>,
    limit: usize,
    now: Timestamp,
) {
    out.push_str(
        "<section id=\"history\"><h2>History</h2><div class=\"scroll\"><table><thead><tr>\
         <th>run</th><th>cycle</th><th>result</th><th>started</th><th>duration</th>\
         <th>failed steps</th><th>triggered by</th></tr></thead><tbody>",
    );
    let runs = state.current_run.iter().chain(state.history.iter().rev());
    for run in runs.take(limit) {
        let _ = write!(
            out,
            "<tr data-run=\"{id}\"><th scope=\"row\"><a href=\"/runs/{id}\">{id}</a></th><td>{cycle}</td>\
             <td class=\"st s-{result}\">{result}</td><td>{started}</td><td>{dur}</td><td>{failed}</td>\
             <td>{why}</td></tr>",
            id = esc(&run.id),
            cycle = run.cycle.as_str(),
            result = run.result.as_str(),
            started = clock(run.started_at, now),
            dur = run
                .finished_at
                .map(|f| span(f.duration_since(run.started_at)))
                .unwrap_or_default(),
            failed = esc(&failed(run)),
            why = esc(&trigger(&run.id).unwrap_or_else(|| "a manual apply, or unknown".into())),
        );
    }
    out.push_str("</tbody></table></div></section>");
}

/// A run's page: every step with its log. `None`: no such run.
pub fn run_page(
    state: &State,
    id: &str,
    runs_dir: &Path,
    why: Option<String>,
    now: Timestamp,
) -> Option<String> {
    let run = state
        .current_run
        .iter()
        .chain(state.history.iter())
        .find(|r| r.id == id)?;
    let mut out = format!(
        "<section id=\"run\"><h2>Run {id}</h2><p>{cycle} cycle, <span class=\"st s-{result}\">{result}</span>; \
         started {started}{finished}; triggered by {why}.</p>",
        id = esc(&run.id),
        cycle = run.cycle.as_str(),
        result = run.result.as_str(),
        started = clock(run.started_at, now),
        finished = run
            .finished_at
            .map(|f| format!(", took {}", span(f.duration_since(run.started_at))))
            .unwrap_or_default(),
        why = esc(&why.unwrap_or_else(|| "a manual apply, or unknown".into())),
    );
    for s in &run.steps {
        let log = log_path(runs_dir, &run.id, &s.name)
            .and_then(|p| read_tail(&p, RUN_LOG_BYTES))
            .filter(|t| !t.is_empty());
        let _ = write!(
            out,
            "<article class=\"step\" id=\"step-{name}\" data-state=\"{result}\"><h3>{name}: \
             <span class=\"st s-{result}\">{result}</span> <small class=\"muted\">{dur}, {attempts} attempt(s)</small></h3>{detail}{log}</article>",
            name = esc(&s.name),
            result = s.result.as_str(),
            dur = ms(s.duration_ms),
            attempts = s.attempts,
            detail = s
                .detail
                .as_deref()
                .map(|d| format!("<p class=\"detail\">{}</p>", esc(d)))
                .unwrap_or_default(),
            log = match log {
                Some(l) => format!("<pre class=\"log\">{}</pre>", esc_pre(&l)),
                None => "<p class=\"muted\">No log.</p>".into(),
            },
        );
    }
    out.push_str("</section>");
    Some(out)
}
