//! The pages' shell: escaping, the embedded style sheet and script (no external assets: the
//! machines serving the pages may be offline), and times in words.

use jiff::{SignedDuration, Timestamp};

/// Text for HTML: markup escaped, control characters (ANSI colour codes in a PR title, a
/// log) shown in caret notation (`^[` for ESC) and bidirectional overrides as U+FFFD,
/// so none of them acts.
pub fn esc(text: &str) -> String {
    esc_keeping(text, false)
}

/// [`esc`] for `<pre>`: newlines and tabs stay.
pub fn esc_pre(text: &str) -> String {
    esc_keeping(text, true)
}

fn esc_keeping(text: &str, layout: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' if layout => out.push(c),
            '\0'..='\u{1f}' => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            '\u{7f}' => out.push_str("^?"),
            '\u{80}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                out.push('\u{fffd}')
            }
            c => out.push(c),
        }
    }
    out
}

/// A clock time, with the date when it is not today.
pub fn clock(t: Timestamp, now: Timestamp) -> String {
    let (a, b) = (
        t.strftime("%Y-%m-%d").to_string(),
        now.strftime("%Y-%m-%d").to_string(),
    );
    if a == b {
        t.strftime("%H:%M:%S UTC").to_string()
    } else {
        t.strftime("%Y-%m-%d %H:%M UTC").to_string()
    }
}

/// A duration in words: `40 s`, `3 min`, `2 h 5 min`, `3 days`.
pub fn span(d: SignedDuration) -> String {
    let s = d.as_secs().max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", ((s + 59) / 60).min(59)),
        3600..172_800 => match (s / 3600, (s % 3600) / 60) {
            (h, 0) => format!("{h} h"),
            (h, m) => format!("{h} h {m} min"),
        },
        _ => format!("{} days", s / 86_400),
    }
}

/// `3 min ago`.
pub fn ago(t: Timestamp, now: Timestamp) -> String {
    format!("{} ago", span(now.duration_since(t)))
}

/// A duration in milliseconds, for steps.
pub fn ms(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        span(SignedDuration::from_millis(ms as i64))
    }
}

const CSS: &str = "\
*{box-sizing:border-box}body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa;line-height:1.4}\
header{background:#234;color:#fff;padding:.5em 1em;display:flex;flex-wrap:wrap;gap:.3em 1.2em;align-items:baseline}\
header h1{font-size:1.2em;margin:0}header a{color:#cde}main{padding:0 1em 2em;max-width:90em}\
h2{font-size:1.1em;margin:1.4em 0 .4em;border-bottom:1px solid #ccc}h3{font-size:1em}\
.scroll{overflow-x:auto;max-width:100%}table{border-collapse:collapse;min-width:50%}\
th,td{padding:.25em .6em;text-align:left;vertical-align:top;border-bottom:1px solid #e4e4e4}\
th{background:#eef}code,pre{font-family:ui-monospace,monospace;font-size:.9em}\
pre{background:#f0f0f0;padding:.4em;margin:.2em 0;white-space:pre-wrap;overflow-wrap:anywhere;max-height:20em;overflow-y:auto}\
td{overflow-wrap:anywhere}.st{font-weight:bold;white-space:nowrap}\
.s-success,.s-done,.s-included,.s-deployed{color:#070}.s-failed,.s-error{color:#b00}\
.s-running{color:#06c}.s-waiting,.s-held,.s-skipped,.s-cancelled,.s-done_before{color:#777}\
.graph{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.3em 1.5em}\
.graph li{display:flex;flex-direction:column;gap:.3em}.graph .node{border:2px solid #999;border-radius:.3em;padding:.15em .5em;background:#fff}\
.graph .node.s-failed{border-color:#b00}.graph .node.s-running{border-color:#06c}.graph .node.s-success{border-color:#070}\
.graph small{color:#666}.words li{margin:.2em 0}.muted{color:#666}\
@media (max-width:40em){main{padding:0 .5em 2em}th,td{padding:.2em .3em}\
table.cards,.cards tbody,.cards tr,.cards th,.cards td{display:block;width:100%}.cards thead,.cards caption{display:none}\
.cards tr{border:1px solid #ccc;border-radius:.3em;margin:.5em 0;background:#fff}.cards td,.cards th{border:0}\
.cards td:empty{display:none}.cards td[data-label]::before{content:attr(data-label) \": \";color:#666}}";

/// Live updates: the server sends the `#live` part again when it changes; without JavaScript
/// the page refreshes itself instead (`<noscript>` in the head).
const JS: &str = "(function(){var m=document.getElementById('live');\
if(!m||!window.EventSource)return;var es=new EventSource('/events');\
es.onmessage=function(e){m.innerHTML=e.data;document.body.setAttribute('data-live','on')};\
es.onerror=function(){document.body.setAttribute('data-live','reconnecting')}})();";

/// Which page a shell shows (highlighted in the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Now,
    History,
}

/// The whole page around `body`; `refresh`: reload every so many seconds without JS.
pub fn page(plan: &str, title: &str, nav: Nav, body: &str, refresh: Option<u32>) -> String {
    let link = |href: &str, text: &str, this: Nav| {
        if nav == this {
            format!("<a href=\"{href}\" aria-current=\"page\"><b>{text}</b></a>")
        } else {
            format!("<a href=\"{href}\">{text}</a>")
        }
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title} · kcideploy {plan}</title>{noscript}<style>{CSS}</style></head>\
         <body><header><h1>kcideploy: {plan}</h1><nav>{now} · {history} · \
         <a href=\"/status\">JSON</a> · <a href=\"/metrics\">metrics</a></nav></header>\
         <main>{body}</main><script>{JS}</script></body></html>\n",
        plan = esc(plan),
        title = esc(title),
        noscript = refresh
            .map(|s| format!("<noscript><meta http-equiv=\"refresh\" content=\"{s}\"></noscript>"))
            .unwrap_or_default(),
        now = link("/", "Now", Nav::Now),
        history = link("/runs", "History", Nav::History),
    )
}

/// The last `lines` lines of `text` (at most `bytes` bytes of it).
pub fn tail(text: &str, lines: usize, bytes: usize) -> &str {
    let mut start = text.len().saturating_sub(bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let text = text[start..].trim_end_matches('\n');
    let cut = text
        .rmatch_indices('\n')
        .nth(lines.saturating_sub(1))
        .map(|(i, _)| i + 1)
        .unwrap_or(0);
    &text[cut..]
}

/// The end of a file (a step's log): at most `bytes` bytes, `None` when unreadable.
pub fn read_tail(path: &std::path::Path, bytes: u64) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(bytes))).ok()?;
    let mut buf = Vec::new();
    f.take(bytes).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_control_characters_are_escaped() {
        assert_eq!(
            esc("<b onclick='x'>\"a\" & \u{1b}[31m\u{202e}"),
            "&lt;b onclick=&#39;x&#39;&gt;&quot;a&quot; &amp; ^[[31m\u{fffd}"
        );
        assert_eq!(esc_pre("a\n\tb\r"), "a\n\tb^M");
    }

    #[test]
    fn durations_read_as_words() {
        assert_eq!(span(SignedDuration::from_secs(40)), "40 s");
        assert_eq!(span(SignedDuration::from_secs(150)), "3 min");
        assert_eq!(span(SignedDuration::from_secs(7500)), "2 h 5 min");
        assert_eq!(span(SignedDuration::from_secs(-5)), "0 s");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2, 100), "b\nc");
        assert_eq!(tail("a\nb", 5, 100), "a\nb");
        assert_eq!(tail("ééé", 5, 3), "é");
    }
}
