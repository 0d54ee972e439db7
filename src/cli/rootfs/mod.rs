//! `promote-rootfs -f STAGING.yaml`: the rootfs images that passed on staging go into the
//! configuration. Staging's state says which passed ([`evidence`]); their URLs replace the
//! old ones in `rootfs.file` of `rootfs.repo`'s base branch ([`rewrite`]); the result is
//! pushed as a branch of that repo and a PR is opened through the GitHub API with the
//! evidence ([`pr`]). Configs that did not pass are left out and named in the PR.

mod evidence;
mod pr;
mod rewrite;

use std::path::PathBuf;

use miette::Result;

use crate::exit::ExitStatus;
use crate::workspace::Workspace;

pub const EXAMPLES: &str = "Examples:
  kcideploy promote-rootfs -f plans/staging.yaml --dry-run
  kcideploy promote-rootfs -f plans/staging.yaml";

#[derive(Debug, clap::Args)]
pub struct PromoteRootfsArgs {
    /// The staging plan file: its `rootfs:` section and its state.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Print what would be promoted and the PR's text; push nothing, open nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Where the configuration repo is fetched (default: beside the state file).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// Each passed config's URL written into the file: `(passed, versions it replaces)`, and
/// the passed configs with nothing to replace (left out, with why).
fn apply_urls<'a>(
    text: &mut String,
    file: &str,
    passed: &'a [evidence::Passed],
) -> (Vec<(&'a evidence::Passed, String)>, Vec<evidence::LeftOut>) {
    let mut promoted = Vec::new();
    let mut unchanged = Vec::new();
    for p in passed {
        let Ok(published) = rewrite::published(&p.url) else {
            continue; // judged before: every passed URL splits
        };
        let r = rewrite::rewrite(text, &published);
        let reason = match (r.found, r.old.is_empty()) {
            (0, _) => format!("passed, but `{file}` has no URL of `{}`", published.stem),
            (_, true) => format!("passed; `{file}` names {} already", p.url),
            (_, false) => {
                *text = r.text;
                let was: Vec<&str> = r.old.iter().map(String::as_str).collect();
                promoted.push((p, was.join(", ")));
                continue;
            }
        };
        unchanged.push(evidence::LeftOut {
            config: p.config.clone(),
            reason,
        });
    }
    (promoted, unchanged)
}

fn print_judgement(promoted: &[(&evidence::Passed, String)], left_out: &[evidence::LeftOut]) {
    for (p, was) in promoted {
        println!("  + {} {} (was {was})", p.config, p.url);
        let mut line = format!("      built by `{}` in run {}", p.build.step, p.build.run);
        for s in &p.after {
            line.push_str(&format!("; `{}` passed in run {}", s.step, s.run));
        }
        println!("{line}");
    }
    for l in left_out {
        println!("  - {}: {}", l.config, l.reason);
    }
}

pub fn cmd_promote_rootfs(args: PromoteRootfsArgs) -> Result<ExitStatus> {
    let ws = Workspace::load(&args.file, args.cache_dir.as_deref())?;
    let Some(rootfs) = ws.config.file.rootfs.clone() else {
        miette::bail!(
            help = "add a `rootfs:` section naming the build step, the checks and the configuration repo (README: Rootfs images)",
            "{}: no `rootfs:` section: nothing says which steps build rootfs images",
            ws.plan_file
        );
    };
    let state = ws.state.clone().unwrap_or_default();
    let (passed, mut left_out) = evidence::judge(&rootfs, &ws.config, &state);
    let base = pr::fetch_base(&ws, &rootfs)?;
    let mut text = base.text.clone();
    let (promoted, unchanged) = apply_urls(&mut text, &rootfs.file, &passed);
    left_out.extend(unchanged);
    println!(
        "kcideploy promote-rootfs: {} — `{}` of `{}` at {} ({})",
        ws.config.file.name,
        rootfs.file,
        rootfs.repo.value,
        base.branch,
        crate::support::text::short(&base.sha)
    );
    print_judgement(&promoted, &left_out);
    if promoted.is_empty() {
        println!(
            "Nothing to promote: no rootfs that passed on staging has a new URL for the configuration."
        );
        return Ok(ExitStatus::Success);
    }
    let body = evidence::body(&ws.config.file.name, &rootfs.file, &promoted, &left_out);
    let names: Vec<&str> = promoted.iter().map(|(p, _)| p.config.as_str()).collect();
    let title = format!("rootfs: promote {} (tested on staging)", names.join(", "));
    if args.dry_run {
        println!("\nDry run: nothing pushed. The PR would be:\n\n{title}\n\n{body}");
        return Ok(ExitStatus::Success);
    }
    let opened = pr::open(&ws, &rootfs, &base, &text, &title, &body)?;
    println!("{opened}");
    Ok(ExitStatus::Success)
}
