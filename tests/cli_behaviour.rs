//! How the binary behaves as a Unix tool: exit codes of usage errors, closed pipes, `--json`
//! always one JSON document, plain logs off a terminal, values that make no sense refused.

mod common;

use std::io::Read;
use std::process::Stdio;

use common::*;

const SUBCOMMANDS: &[&[&str]] = &[
    &["plan"],
    &["validate"],
    &["graph"],
    &["schema"],
    &["show"],
    &["apply"],
    &["run"],
    &["serve"],
    &["state", "show"],
    &["state", "history"],
    &["force-unlock"],
    &["blame"],
    &["exclusions"],
    &["completions"],
    &["man"],
    &["demo"],
];

#[test]
fn usage_errors_exit_64_which_no_success_path_uses() {
    for sub in SUBCOMMANDS {
        let (code, out, err) = output(kcideploy().args(*sub).arg("--no-such-flag"));
        assert_eq!(code, 64, "{sub:?}: {out}{err}");
        assert!(err.contains("--no-such-flag"), "{sub:?}: {err}");
    }
    let (code, _, err) = output(kcideploy().arg("plna"));
    assert_eq!(code, 64, "{err}");
    // Help and version are answers.
    assert_eq!(output(kcideploy().arg("--help")).0, 0);
    assert_eq!(output(kcideploy().args(["plan", "--help"])).0, 0);
    assert_eq!(output(kcideploy().arg("--version")).0, 0);
}

#[test]
fn parallelism_zero_is_refused() {
    for sub in [
        &["apply", "-f", "x.yaml"][..],
        &["serve", "-f", "x.yaml"][..],
    ] {
        let (code, _, err) = output(kcideploy().args(sub).args(["-parallelism", "0"]));
        assert_eq!(code, 64, "{sub:?}: {err}");
        assert!(err.contains("must be at least 1"), "{err}");
    }
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    for sub in [&["schema"][..], &["man"][..], &["completions", "bash"][..]] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("kcideploy"))
            .args(sub)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // Read a little, then close the pipe, like `| head -c 10`.
        let mut stdout = child.stdout.take().expect("stdout");
        let mut first = [0u8; 10];
        stdout.read_exact(&mut first).expect("some output");
        drop(stdout);
        let mut err = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err)
            .expect("stderr");
        let status = child.wait().expect("wait");
        assert!(!err.contains("panicked"), "{sub:?}: {err}");
        assert_ne!(status.code(), Some(101), "{sub:?}: {err}");
    }
}

fn no_state_fixture() -> (Fixture, std::path::PathBuf) {
    let fx = Fixture::new();
    fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    let plan = fx.plan_file(ONE_STEP_PLAN);
    (fx, plan)
}

#[test]
fn json_output_is_one_document_even_with_nothing_to_show() {
    let (_fx, plan) = no_state_fixture();
    for sub in [
        &["state", "show", "--json", "-f"][..],
        &["state", "history", "--json", "-f"][..],
        &["blame", "--json", "-f"][..],
        &["exclusions", "--json", "-f"][..],
        &["plan", "--json", "-f"][..],
    ] {
        let (code, out, err) = output(kcideploy().args(sub).arg(&plan));
        assert_eq!(code, 0, "{sub:?}: {out}{err}");
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(&out);
        assert!(parsed.is_ok(), "{sub:?} printed no JSON document: {out}");
    }
}

#[test]
fn logs_off_a_terminal_have_no_colour_codes() {
    let (_fx, plan) = no_state_fixture();
    let (code, _, err) = output(
        kcideploy()
            .env_remove("NO_COLOR")
            .env("RUST_LOG", "kcideploy=debug")
            .args(["plan", "-f"])
            .arg(&plan),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("fetching the forges"),
        "a debug line was logged: {err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "ANSI codes in a log to a pipe: {err:?}"
    );
}

#[test]
fn run_tells_the_policy_s_reason_not_a_command_line_one() {
    let (fx, plan) = no_state_fixture();
    let remote = git2::Repository::open_bare(fx.path().join("repos/pipe.git")).expect("repo");
    let main = remote.refname_to_id("refs/heads/main").expect("main");
    let config = fx.config(&std::fs::read_to_string(&plan).expect("plan"));
    fx.deploy(&config, &[("pipe", main)], Some(NOW - 3600));
    let remote = Remote {
        repo: remote,
        path: fx.path().join("repos/pipe.git"),
        main,
    };
    remote.branch("pr/1", ALICE, &[("config/a.yaml", Some("a: 2\n"))]);
    let (code, out, err) = output(
        kcideploy()
            .args(["run", "-f"])
            .arg(&plan)
            .args(["--at", at().as_str()]),
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("partial cycle (auto: last full cycle 1h ago"),
        "{out}"
    );
    assert!(!out.contains("asked for on the command line"), "{out}");
}

#[test]
fn escape_sequences_in_a_pr_title_are_shown_not_sent_to_the_terminal() {
    let (fx, plan) = no_state_fixture();
    let remote = git2::Repository::open_bare(fx.path().join("repos/pipe.git")).expect("repo");
    let main = remote.refname_to_id("refs/heads/main").expect("main");
    let evil = kcideploy::gitops::scratch::commit(
        &remote,
        Some(main),
        &[("config/a.yaml", Some("a: 3\n"))],
        ALICE,
        NOW - DAY,
        "fix\u{1b}]0;pwned\u{7}\u{1b}[31m red\r hidden",
    )
    .expect("commit");
    kcideploy::gitops::scratch::set_branch(&remote, "pr/1", evil).expect("branch");
    let (code, out, err) = output(
        kcideploy()
            .args(["plan", "-f"])
            .arg(&plan)
            .args(["--at", at().as_str()]),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pr/1"), "{out}");
    assert!(!out.contains('\u{1b}') && !out.contains('\r'), "{out:?}");
    assert!(out.contains("fix\\u{1b}]0;pwned"), "shown escaped: {out}");
}

#[test]
fn the_readme_exit_code_table_is_the_code_s() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("read");
    let start = readme
        .find("| code | meaning |")
        .expect("the exit-code table");
    let documented: Vec<u8> = readme[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            l.trim_start_matches('|')
                .split('|')
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .collect();
    let actual: Vec<u8> = kcideploy::exit::ExitStatus::ALL
        .iter()
        .map(|s| s.code())
        .collect();
    assert_eq!(documented, actual);
}

/// Every command and subcommand, as `kcideploy-state-show` names, from the CLI definition.
fn command_names(cmd: &clap::Command, name: &str, out: &mut Vec<String>) {
    out.push(name.to_string());
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        command_names(sub, &format!("{name}-{}", sub.get_name()), out);
    }
}

#[test]
fn a_man_page_and_help_examples_for_every_subcommand() {
    let cli = <kcideploy::cli::Cli as clap::CommandFactory>::command();
    let mut names = Vec::new();
    command_names(&cli, "kcideploy", &mut names);
    assert!(names.len() > 15, "{names:?}");
    let dir = tempfile::tempdir().expect("tmp");
    let (code, out, err) = output(kcideploy().args(["man", "--dir"]).arg(dir.path()));
    assert_eq!(code, 0, "{out}{err}");
    for name in &names {
        let page = std::fs::read_to_string(dir.path().join(format!("{name}.1")))
            .unwrap_or_else(|e| panic!("{name}.1: {e}"));
        assert!(
            page.contains(&name.replace('-', "\\-")),
            "{name}.1 names itself"
        );
    }
    let written = std::fs::read_dir(dir.path()).expect("dir").count();
    assert_eq!(written, names.len(), "one page each, no more");
    // Each top-level subcommand's --help ends with examples.
    for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
        let (code, out, _) = output(kcideploy().args([sub.get_name(), "--help"]));
        assert_eq!(code, 0);
        assert!(
            out.contains("Examples:\n  kcideploy "),
            "{} --help has no examples:\n{out}",
            sub.get_name()
        );
    }
}

/// Every subcommand and every one of its long options is in the README's CLI table (the
/// `## CLI` section), as `name` (subcommand) and `-option`/`--option`.
#[test]
fn the_readme_cli_table_documents_every_subcommand_and_option() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("read");
    let start = readme.find("\n## CLI\n").expect("the CLI section");
    let end = readme[start + 1..]
        .find("\n## ")
        .map_or(readme.len(), |e| start + 1 + e);
    let section = &readme[start..end];
    let cli = <kcideploy::cli::Cli as clap::CommandFactory>::command();
    let mut missing = Vec::new();
    for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = sub.get_name();
        if !section.contains(&format!("kcideploy {name}")) {
            missing.push(format!("kcideploy {name}"));
        }
        let mut subs: Vec<&clap::Command> = vec![sub];
        subs.extend(sub.get_subcommands());
        for cmd in subs {
            for arg in cmd.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if ["help", "version", "no-color", "file"].contains(&long) {
                    continue;
                }
                let documented = [format!("-{long}"), format!("--{long}")].iter().any(|f| {
                    section.contains(&format!("`{f}"))
                        || section.contains(&format!(" {f}"))
                        || section.contains(&format!("[{f}"))
                });
                if !documented {
                    missing.push(format!("{} --{long}", cmd.get_name()));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in the README's CLI section: {missing:?}"
    );
}
