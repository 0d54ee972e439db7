//! The live part of the main page (`#live`, sent again by `/events` when it changes): the
//! running cycle and its step graph, why the next deploy has not started yet, and every
//! pending change.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;
use std::path::Path;

use jiff::Timestamp;

use super::html::{ago, clock, esc, esc_pre, ms, read_tail, span, tail};
use crate::apply::events::StepResult;
use crate::config::Cycle;
use crate::server::status::{ChangeState, GraphStep, RunStatus, Status, StepState};

/// Changes state says are deployed: (repo, change, head).
pub type Deployed = BTreeSet<(String, String, String)>;

/// Lines of a step's log shown on the main page.
const TAIL_LINES: usize = 12;

/// The `#live` part.
pub fn live(s: &Status, runs_dir: &Path, deployed: &Deployed, now: Timestamp) -> String {
    let mut out = String::new();
    match (&s.running, &s.last_run) {
        (Some(run), _) => running(&mut out, run, runs_dir, now, true),
        (None, Some(run)) => running(&mut out, run, runs_dir, now, false),
        (None, None) => {
            out.push_str("<section id=\"now\"><h2>Now</h2><p>No deploy is running.</p></section>")
        }
    }
    last(&mut out, s, now);
    why_not_yet(&mut out, s, now);
    changes(&mut out, s, deployed, now);
    out
}

/// A step's state in one word: waiting, held, running, or how it ended.
fn word(step: Option<&StepState>, g: Option<&GraphStep>) -> &'static str {
    match step {
        Some(StepState::Running) => "running",
        Some(StepState::Done(StepResult::Cancelled)) if g.is_some_and(|g| g.approve) => "held",
        Some(StepState::Done(r)) => r.as_str(),
        None if g.is_some_and(|g| g.approve) => "held",
        None => "waiting",
    }
}

/// The running deploy (`live`), or the last one when nothing runs.
fn running(out: &mut String, run: &RunStatus, runs_dir: &Path, now: Timestamp, live: bool) {
    let _ = write!(
        out,
        "<section id=\"now\"><h2>{head}: {cycle} cycle{id}</h2><p>Started {at} ({ago}) for \
         <span id=\"trigger\">{why}</span>. Restarts: {restarts}.</p>",
        head = if live {
            "Now"
        } else {
            "No deploy is running. The last one"
        },
        cycle = run.cycle.as_str(),
        id = run
            .run_id
            .as_deref()
            .map(|id| format!(", run <a href=\"/runs/{0}\">{0}</a>", esc(id)))
            .unwrap_or_default(),
        at = clock(run.started_at, now),
        ago = ago(run.started_at, now),
        why = esc(&run.trigger),
        restarts = run.restarts,
    );
    if live && run.graph.is_empty() && run.steps.is_empty() {
        out.push_str("<p>Fetching and planning…</p></section>");
        return;
    }
    graph(out, run);
    let graph: HashMap<&str, &GraphStep> = run.graph.iter().map(|g| (g.name.as_str(), g)).collect();
    let mut names: Vec<&str> = run.graph.iter().map(|g| g.name.as_str()).collect();
    names.extend(
        run.steps
            .keys()
            .map(String::as_str)
            .filter(|n| !graph.contains_key(n)),
    );
    out.push_str(
        "<div class=\"scroll\"><table id=\"steps\" class=\"cards\"><caption class=\"muted\">Steps in plan \
         order</caption><thead><tr><th>step</th><th>waits on</th><th>state</th><th>started</th>\
         <th>duration</th><th>log</th></tr></thead><tbody>",
    );
    for name in names {
        let step = run.steps.get(name);
        let g = graph.get(name).copied();
        let state = word(step.map(|s| &s.state), g);
        let log = step_log(run, name, runs_dir);
        let _ = write!(
            out,
            "<tr id=\"step-{id}\" data-state=\"{state}\"><th scope=\"row\">{name}</th>\
             <td data-label=\"waits on\">{waits}</td><td class=\"st s-{state}\">{state}</td>\
             <td data-label=\"started\">{started}</td><td data-label=\"took\">{dur}</td><td>{log}</td></tr>",
            id = esc(name),
            name = esc(name),
            waits = g.map(|g| esc(&g.waits_on.join(", "))).unwrap_or_default(),
            started = step
                .and_then(|s| s.started_at)
                .map(|t| clock(t, now))
                .unwrap_or_default(),
            dur = match step {
                Some(s) if s.state == StepState::Running => s
                    .started_at
                    .map(|t| span(now.duration_since(t)))
                    .unwrap_or_default(),
                Some(s) => s.duration_ms.map(ms).unwrap_or_default(),
                None => String::new(),
            },
            log = log,
        );
    }
    out.push_str("</tbody></table></div></section>");
}

/// The detail and the end of a step's log: the live file while it runs.
fn step_log(run: &RunStatus, name: &str, runs_dir: &Path) -> String {
    let Some(step) = run.steps.get(name) else {
        return String::new();
    };
    let text = match (&step.state, &step.log_tail, &run.run_id) {
        (StepState::Done(_), Some(t), _) => Some(t.clone()),
        (StepState::Running, _, Some(id)) => read_tail(
            &runs_dir
                .join(id)
                .join(format!("{}.log", crate::config::names::file_name(name))),
            8192,
        ),
        _ => None,
    };
    let mut out = String::new();
    if let Some(d) = &step.detail {
        let _ = write!(out, "<div class=\"detail\">{}</div>", esc(d));
    }
    if let Some(t) = text.filter(|t| !t.trim().is_empty()) {
        let _ = write!(
            out,
            "<pre class=\"tail\">{}</pre>",
            esc_pre(tail(&t, TAIL_LINES, 4096))
        );
    }
    out
}

/// The graph in layers: a step stands right of every step it waits on.
fn graph(out: &mut String, run: &RunStatus) {
    let mut depth: HashMap<&str, usize> = HashMap::new();
    for g in &run.graph {
        let d = g
            .waits_on
            .iter()
            .filter_map(|w| depth.get(w.as_str()))
            .max()
            .map_or(0, |d| d + 1);
        depth.insert(&g.name, d);
    }
    let layers = depth.values().max().map_or(0, |d| d + 1);
    out.push_str(
        "<h3>Step graph</h3><ol class=\"graph\" aria-label=\"steps by what they wait on\">",
    );
    for layer in 0..layers {
        out.push_str("<li>");
        for g in run
            .graph
            .iter()
            .filter(|g| depth.get(g.name.as_str()) == Some(&layer))
        {
            let state = word(run.steps.get(&g.name).map(|s| &s.state), Some(g));
            let _ = write!(
                out,
                "<span class=\"node s-{state}\" title=\"{state}\">{name} <small>{state}</small>{after}</span>",
                name = esc(&g.name),
                after = if g.waits_on.is_empty() {
                    String::new()
                } else {
                    format!("<br><small>after {}</small>", esc(&g.waits_on.join(", ")))
                },
            );
        }
        out.push_str("</li>");
    }
    out.push_str("</ol>");
}

fn last(out: &mut String, s: &Status, now: Timestamp) {
    let Some(last) = &s.last else { return };
    let _ = write!(
        out,
        "<section id=\"last\"><h2>Last deploy</h2><p>{cycle} cycle: <span class=\"st s-{result}\">{result}</span>{run}, \
         {start} → {end} ({took}){why}{error}</p></section>",
        cycle = last.cycle.as_str(),
        result = last.result.as_str(),
        run = last
            .run_id
            .as_deref()
            .map(|id| format!(" (run <a href=\"/runs/{0}\">{0}</a>)", esc(id)))
            .unwrap_or_default(),
        start = clock(last.started_at, now),
        end = clock(last.finished_at, now),
        took = span(last.finished_at.duration_since(last.started_at)),
        why = last
            .trigger
            .as_deref()
            .map(|t| format!(", triggered by {}", esc(t)))
            .unwrap_or_default(),
        error = last
            .error
            .as_deref()
            .map(|e| format!(": {}", esc(e)))
            .unwrap_or_default(),
    );
}

fn why_not_yet(out: &mut String, s: &Status, now: Timestamp) {
    let mut lines: Vec<String> = Vec::new();
    let w = &s.waiting;
    let at = |t: Timestamp| format!("{} (in {})", clock(t, now), span(t.duration_since(now)));
    match &s.running {
        Some(run) if run.cycle == Cycle::Partial => {
            let left = w.max_restarts.saturating_sub(run.restarts);
            lines.push(if left > 0 {
                format!(
                    "A new push restarts this partial deploy ({left} of {} restart(s) left).",
                    w.max_restarts
                )
            } else {
                "Restart budget used up: new pushes wait for the next deploy.".into()
            })
        }
        Some(_) => lines
            .push("A full cycle is never interrupted: new pushes wait for the next deploy.".into()),
        None => {}
    }
    if let Some(c) = w.requested {
        lines.push(format!(
            "A {} cycle was asked for: it starts as soon as nothing runs.",
            c.as_str()
        ));
    }
    if let Some(t) = w.settle_until {
        lines.push(format!(
            "Waiting {} for more pushes (until {}).",
            span(t.duration_since(now)),
            clock(t, now)
        ));
    }
    if let Some(t) = w.cooldown_until {
        lines.push(format!(
            "Cooling down after the last deploy: nothing starts before {}.",
            at(t)
        ));
    }
    if s.running.is_none() {
        match (s.next_deploy, s.next_cycle) {
            (Some(t), Some(c)) if s.queue > 0 || w.requested.is_some() => {
                lines.push(format!("Next deploy: {} cycle at {}.", c.as_str(), at(t)))
            }
            (Some(t), Some(c)) => lines.push(format!(
                "Nothing queued: a {} cycle starts at {} unless a push comes first.",
                c.as_str(),
                at(t)
            )),
            _ => {}
        }
    }
    match s.next_full {
        Some(t) if t > now => lines.push(format!("Full cycle allowed from {}.", at(t))),
        Some(_) => lines.push("A full cycle is allowed now: the next deploy is one.".into()),
        None => {}
    }
    if let Some(t) = s.schedule_next {
        lines.push(format!("policy.schedule: next full cycle at {}.", at(t)));
    }
    lines.push(format!(
        "{} event(s) queued; {} approval(s) waiting to be recorded.",
        s.queue, s.approvals_pending
    ));
    out.push_str("<section id=\"why\"><h2>Why not yet</h2><ul class=\"words\">");
    for l in lines {
        let _ = write!(out, "<li>{}</li>", esc(&l));
    }
    out.push_str("</ul></section>");
}

fn changes(out: &mut String, s: &Status, deployed: &Deployed, now: Timestamp) {
    let (inc, left) = s.changes.iter().fold((0, 0), |(i, l), c| match c.state {
        ChangeState::Included => (i + 1, l),
        ChangeState::LeftOut(_) => (i, l + 1),
    });
    let _ = write!(
        out,
        "<section id=\"changes\"><h2>Changes</h2><p>{inc} included, {left} left out, as the \
         last deploy saw them.</p><div class=\"scroll\"><table class=\"cards\"><thead><tr><th>change</th>\
         <th>repo</th><th>title</th><th>author</th><th>head</th><th>age</th><th>state</th>\
         <th>why</th></tr></thead><tbody>"
    );
    for c in &s.changes {
        let key = (c.repo.clone(), c.change.clone(), c.head.clone());
        let state = match c.state {
            ChangeState::Included if deployed.contains(&key) => "deployed".to_string(),
            ChangeState::Included if s.running.is_some() => "deploying".to_string(),
            ChangeState::Included => "included (not deployed)".to_string(),
            ChangeState::LeftOut(r) => format!("out: {}", r.as_str()),
        };
        let class = match c.state {
            ChangeState::Included => "s-included",
            ChangeState::LeftOut(_) => "s-failed",
        };
        let mut why = esc(c.detail.as_deref().unwrap_or(""));
        if !c.paths.is_empty() {
            let _ = write!(why, "<br>files: <code>{}</code>", esc(&c.paths.join(", ")));
        }
        let _ = write!(
            out,
            "<tr data-change=\"{id}\" data-state=\"{state}\"><th scope=\"row\">{link}</th>\
             <td data-label=\"repo\">{repo}</td><td>{title}</td><td data-label=\"author\">{author}</td>\
             <td data-label=\"head\"><code>{head}</code></td><td data-label=\"age\">{age}</td>\
             <td class=\"st {class}\">{state}</td><td>{why}</td></tr>",
            id = esc(&c.change),
            link = match &c.url {
                Some(u) => format!("<a href=\"{}\">{}</a>", esc(u), esc(&c.change)),
                None => esc(&c.change),
            },
            repo = esc(&c.repo),
            title = esc(&c.title),
            author = esc(&c.author),
            head = esc(c.head.get(..12).unwrap_or(&c.head)),
            age = c
                .committed_at
                .map(|t| span(now.duration_since(t)))
                .unwrap_or_default(),
            state = esc(&state),
        );
    }
    out.push_str("</tbody></table></div></section>");
}
