//! Every plan file error names file:line:col.

use std::path::Path;

use kcideploy::config::{Config, ConfigError};

const GOOD: &str = r#"version: 1
name: t
repos:
  pipe:
    url: repos/pipe.git
components:
  config:
    repo: pipe
    paths: ["config/**"]
steps:
  build:
    kind: command
    on: [config]
    with: { run: ["true"] }
  restart:
    kind: command
    needs: [build]
    with: { shell: "true" }
"#;

/// The error messages (each starts with file:line:col).
fn errors(text: &str) -> Vec<String> {
    match Config::from_str(Path::new("plans/bad.yaml"), text.to_string()) {
        Ok(_) => panic!("plan file was accepted:\n{text}"),
        Err(e @ (ConfigError::Syntax(_) | ConfigError::Invalid(_))) => {
            e.errors().iter().map(|e| e.message.clone()).collect()
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn one_error(text: &str) -> String {
    let mut all = errors(text);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

/// Render a report the way the CLI does, without colours.
fn rendered(text: &str) -> String {
    let err = Config::from_str(Path::new("plans/bad.yaml"), text.to_string()).expect_err("invalid");
    let mut out = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut out, &err)
        .expect("render");
    out
}

#[test]
fn good_plan_file_loads() {
    let config = Config::from_str(Path::new("plans/good.yaml"), GOOD.to_string()).expect("valid");
    assert_eq!(config.file.steps.len(), 2);
    let explicit = GOOD.replace("name: t\n", "name: t\nstate: { path: s/t.json }\n");
    let config2 = Config::from_str(Path::new("plans/good.yaml"), explicit).expect("valid");
    assert_eq!(config2.state_path(), Path::new("plans/s/t.json"));
    assert_eq!(config.file.policy.full_cycle_interval.as_secs(), 6 * 3600);
}

#[test]
fn unknown_repo_in_component() {
    let text = GOOD.replace("    repo: pipe", "    repo: pipes");
    assert_eq!(
        one_error(&text),
        "plans/bad.yaml:8:11: component `config` names unknown repo `pipes`"
    );
    assert!(
        rendered(&text).contains("did you mean `pipe`?"),
        "{}",
        rendered(&text)
    );
}

#[test]
fn unknown_component_in_on() {
    let text = GOOD.replace("on: [config]", "on: [configs]");
    assert_eq!(
        one_error(&text),
        "plans/bad.yaml:13:10: step `build` is triggered by unknown component `configs`"
    );
}

#[test]
fn unknown_step_in_needs_and_after() {
    let text = GOOD.replace("needs: [build]", "needs: [biuld]\n    after: [nope]");
    assert_eq!(
        errors(&text),
        [
            "plans/bad.yaml:17:13: step `restart` needs unknown step `biuld`",
            "plans/bad.yaml:18:13: step `restart` runs after unknown step `nope`",
        ]
    );
    let report = rendered(&text);
    assert!(report.contains("did you mean `build`?"), "{report}");
    assert!(
        report.contains("known steps: `build`, `restart`"),
        "{report}"
    );
}

#[test]
fn dependency_cycle_names_every_step() {
    let text = GOOD.replace("    on: [config]\n", "    on: [config]\n    needs: [deploy]\n").replace(
        "  restart:\n",
        "  deploy:\n    kind: command\n    needs: [restart]\n    with: { run: [\"true\"] }\n  restart:\n",
    );
    let message = one_error(&text);
    assert_eq!(
        message,
        "plans/bad.yaml:14:13: dependency cycle among steps `build`, `deploy`, `restart`"
    );
    let report = rendered(&text);
    for label in [
        "`build` needs `deploy`",
        "`deploy` needs `restart`",
        "`restart` needs `build`",
    ] {
        assert!(report.contains(label), "missing {label}:\n{report}");
    }
}

#[test]
fn self_dependency_is_a_cycle() {
    let text = GOOD.replace("needs: [build]", "needs: [restart]");
    assert_eq!(
        one_error(&text),
        "plans/bad.yaml:17:13: dependency cycle among steps `restart`"
    );
}

#[test]
fn invalid_glob() {
    let text = GOOD.replace(
        r#"paths: ["config/**"]"#,
        r#"paths: ["config/**", "src/[a-"]"#,
    );
    let message = one_error(&text);
    assert!(
        message.starts_with("plans/bad.yaml:9:26: invalid glob `src/[a-` in component path"),
        "{message}"
    );
}

#[test]
fn invalid_branch_pattern() {
    let text = GOOD.replace(
        "    url: repos/pipe.git\n",
        "    url: repos/pipe.git\n    pending: { branches: \"pr/{a\" }\n",
    );
    let message = one_error(&text);
    assert!(
        message.starts_with("plans/bad.yaml:6:26: invalid glob `pr/{a` in pending.branches"),
        "{message}"
    );
}

#[test]
fn duplicate_key() {
    let text = GOOD.replace("  restart:\n", "  build:\n");
    let message = one_error(&text);
    assert!(message.starts_with("plans/bad.yaml:15:3: "), "{message}");
    assert!(
        message.ends_with("duplicate key `build`: a key may appear only once in a mapping"),
        "{message}"
    );
}

#[test]
fn bad_duration() {
    let text = format!("{GOOD}policy: {{ settle: 5 parsecs }}\n");
    let message = one_error(&text);
    assert!(message.starts_with("plans/bad.yaml:19:19: "), "{message}");
    assert!(
        message.ends_with(
            "invalid duration `5 parsecs`: write a number and a unit, such as 30s, 5m, 6h or 14d"
        ),
        "{message}"
    );
}

#[test]
fn unknown_field_is_rejected() {
    let text = GOOD.replace(
        "    kind: command\n    on:",
        "    kind: command\n    onn: [x]\n    on:",
    );
    let message = one_error(&text);
    assert!(message.starts_with("plans/bad.yaml:13:5: "), "{message}");
    assert!(message.contains("onn"), "{message}");
}

#[test]
fn unknown_step_kind_is_rejected() {
    let text = GOOD.replacen("kind: command", "kind: comand", 1);
    let message = one_error(&text);
    assert!(message.starts_with("plans/bad.yaml:12:11: "), "{message}");
    assert!(message.contains("comand"), "{message}");
}

#[test]
fn invalid_kind_settings_name_the_field() {
    let text = GOOD.replace(r#"with: { run: ["true"] }"#, r#"with: { run: "true" }"#);
    assert_eq!(
        one_error(&text),
        "plans/bad.yaml:14:11: step `build` (command): with.run: invalid type: string \"true\", expected a sequence"
    );
    let text = GOOD.replace(
        r#"with: { run: ["true"] }"#,
        r#"with: { run: ["true"], shell: "true" }"#,
    );
    assert!(
        one_error(&text)
            .ends_with("a command step needs exactly one of with.run (argv) and with.shell")
    );
    let text = GOOD.replace(
        r#"with: { run: ["true"] }"#,
        r#"with: { run: ["true"], repo: pipes }"#,
    );
    assert_eq!(
        one_error(&text),
        "plans/bad.yaml:14:11: step `build`: with.repo names unknown repo `pipes`"
    );
    let text = GOOD.replace(
        r#"    with: { run: ["true"] }
"#,
        "",
    );
    assert_eq!(
        one_error(&text.replace("    with: { run: [\"true\"] }\n", "")),
        "plans/bad.yaml:12:11: step `build` (command): a command step needs exactly one of with.run (argv) and with.shell"
    );
}

#[test]
fn unsupported_version() {
    let text = GOOD.replace("version: 1", "version: 2");
    assert_eq!(
        one_error(&text),
        "plans/bad.yaml:1:10: unsupported plan file version 2: this kcideploy reads version 1"
    );
}

#[test]
fn several_errors_are_all_reported_in_file_order() {
    let text = GOOD
        .replace("on: [config]", "on: [nope]")
        .replace("    repo: pipe", "    repo: nope");
    let all = errors(&text);
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all[0].starts_with("plans/bad.yaml:8:11:"));
    assert!(all[1].starts_with("plans/bad.yaml:13:10:"));
}

#[test]
fn report_shows_the_line_with_a_caret() {
    let text = GOOD.replace("on: [config]", "on: [configs]");
    insta::assert_snapshot!(rendered(&text));
}

#[test]
fn a_key_with_a_line_break_is_reported_whole_on_one_line() {
    // The message comes from serde-saphyr's structured error; control characters in it are
    // escaped so the message stays one line.
    let text = GOOD.replace("name: t\n", "name: t\n\"ev\\nil\": 1\n");
    let msg = one_error(&text);
    assert!(msg.starts_with("plans/bad.yaml:3:1: "), "{msg}");
    assert_eq!(msg, "plans/bad.yaml:3:1: unknown field `ev\\nil`");
    assert!(!msg.contains('\n'), "{msg}");
}

/// Render a report of any error the way the CLI does, without colours.
fn render(err: &ConfigError) -> String {
    let mut out = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut out, err)
        .expect("render");
    out
}

fn load(bytes: &[u8]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("plan.yaml");
    std::fs::write(&path, bytes).expect("write");
    Config::load(&path)
}

#[test]
fn a_plan_file_over_the_size_limit_is_refused_before_parsing() {
    let mut text = GOOD.as_bytes().to_vec();
    text.extend(b"# ");
    let max = kcideploy::config::MAX_PLAN_FILE_BYTES as usize;
    text.resize(max + 1, b'x');
    let err = load(&text).expect_err("too large");
    assert!(matches!(err, ConfigError::TooLarge { .. }), "{err}");
    assert!(
        err.to_string().ends_with(
            "the plan file is larger than 4 MiB; a plan file this large is not a plan file"
        ),
        "{err}"
    );
    // At the limit it is read (and here valid: the rest is a comment).
    text.truncate(max);
    load(&text).expect("a plan file at the limit loads");
}

#[test]
fn a_huge_key_is_quoted_briefly_and_the_line_is_not_echoed() {
    let key = "k".repeat(1024 * 1024);
    // A plain key is at most 1024 characters long; an explicit key (`? key`) is not.
    let text = GOOD.replace("name: t\n", &format!("name: t\n? {key}\n: 1\n"));
    let started = std::time::Instant::now();
    let err = Config::from_str(Path::new("plans/bad.yaml"), text).expect_err("unknown key");
    let report = render(&err);
    assert!(report.len() < 2000, "{} bytes of report", report.len());
    let message = &err.errors()[0].message;
    assert!(message.starts_with("plans/bad.yaml:3:3: "), "{message}");
    assert!(
        message.contains(&format!("`{}…`", "k".repeat(kcideploy::config::QUOTE_MAX))),
        "{message}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn long_names_are_quoted_briefly() {
    let long = "x".repeat(500);
    let text = GOOD.replace("on: [config]", &format!("on: [{long}]"));
    let message = one_error(&text);
    assert!(message.len() < 200, "{message}");
    assert!(
        message.ends_with(
            "unknown component `xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…`"
        ),
        "{message}"
    );
}

#[test]
fn a_plan_file_that_is_not_utf8_names_line_column_and_offset() {
    let text = GOOD.replace("name: t", "name: \"caf\u{e9}\u{1}\"");
    let mut bytes = text.into_bytes();
    let at = bytes.iter().position(|&b| b == 1).expect("marker");
    bytes[at] = 0xff;
    let err = load(&bytes).expect_err("not UTF-8");
    let message = err.to_string();
    assert!(
        message.ends_with("plan.yaml:2:12: the plan file is not UTF-8: byte 0xff at offset 23 cannot start a character"),
        "{message}"
    );
}

/// Every error with its help line, from the rendered report.
fn helps(text: &str) -> Vec<String> {
    rendered(text)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("help: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_unknown_field_is_reported_with_a_suggestion() {
    let text = GOOD
        .replace(
            "    url: repos/pipe.git\n",
            "    url: repos/pipe.git\n    bsae: main\n",
        )
        .replace("    paths:", "    pathz: []\n    paths:")
        .replace("    on: [config]", "    onn: [config]")
        .replace("name: t\n", "name: t\nnotify: { enabeld: false }\n");
    assert_eq!(
        errors(&text),
        [
            "plans/bad.yaml:3:11: unknown field `enabeld` in `notify`",
            "plans/bad.yaml:7:5: unknown field `bsae` in `repos.pipe`",
            "plans/bad.yaml:11:5: unknown field `pathz` in `components.config`",
            "plans/bad.yaml:16:5: unknown field `onn` in `steps.build`",
        ]
    );
    assert_eq!(
        helps(&text),
        [
            "did you mean `enabled`?",
            "did you mean `base`?",
            "did you mean `paths`?",
            "did you mean `on`?",
        ]
    );
}

#[test]
fn an_unknown_field_without_a_near_miss_lists_the_known_ones() {
    let text = GOOD.replace("name: t\n", "name: t\nblame: { zzz: 1 }\n");
    assert_eq!(
        one_error(&text),
        "plans/bad.yaml:3:10: unknown field `zzz` in `blame`"
    );
    assert_eq!(
        helps(&text),
        ["known fields: `enabled`, `max_culprits`, `max_rounds`"]
    );
}

#[test]
fn a_missing_field_is_reported_where_its_mapping_starts() {
    let text = GOOD.replace("name: t\n", "");
    assert_eq!(one_error(&text), "plans/bad.yaml:1:1: missing field `name`");
    let text = GOOD.replace("    paths: [\"config/**\"]\n", "");
    assert_eq!(
        one_error(&text),
        "plans/bad.yaml:7:3: missing field `paths` in `components.config`"
    );
    assert!(helps(&text)[0].starts_with("`paths`: Glob patterns"));
}

#[test]
fn unknown_fields_and_a_type_error_are_reported_together() {
    let text = GOOD
        .replace("    on: [config]", "    onn: [config]")
        .replace("name: t\n", "name: t\npolicy: { settle: 5 parsecs }\n");
    let all = errors(&text);
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(
        all[0].starts_with("plans/bad.yaml:3:19: invalid duration"),
        "{all:?}"
    );
    assert!(
        all[1].starts_with("plans/bad.yaml:14:5: unknown field `onn`"),
        "{all:?}"
    );
}

#[test]
fn merge_keys_are_not_unknown_fields() {
    let text = GOOD.replace(
        "  restart:\n    kind: command\n",
        "  restart:\n    <<: { kind: command }\n",
    );
    Config::from_str(Path::new("plans/good.yaml"), text).expect("valid");
}

#[test]
fn globs_that_can_never_match_are_rejected() {
    let text = GOOD.replace(
        r#"paths: ["config/**"]"#,
        r#"paths: ["/config/**", "./src/*.py", "", "ci\\*.yaml", "docs/", "../x/**"]"#,
    );
    let all = errors(&text);
    let expected = [
        "plans/bad.yaml:9:13: glob `/config/**` in component path can never match: paths are relative to the repo root",
        "plans/bad.yaml:9:27: glob `./src/*.py` in component path can never match: paths are relative to the repo root",
        "plans/bad.yaml:9:41: glob `` in component path can never match: it is empty",
        "plans/bad.yaml:9:45: glob `ci\\*.yaml` in component path can never match: paths are separated by `/`, and a backslash only escapes",
        "plans/bad.yaml:9:59: glob `docs/` in component path can never match: paths name files, never a directory ending in `/`",
        "plans/bad.yaml:9:68: glob `../x/**` in component path can never match: paths have no `.` or `..` components",
    ];
    assert_eq!(all, expected);
    assert_eq!(helps(&text)[0], "write `config/**`");
    let text = GOOD.replace(
        "    url: repos/pipe.git\n",
        "    url: repos/pipe.git\n    pending: { branches: \"/pr/*\" }\n",
    );
    assert!(
        one_error(&text)
            .starts_with("plans/bad.yaml:6:26: glob `/pr/*` in pending.branches can never match")
    );
}

#[test]
fn names_that_become_paths_must_be_safe() {
    let text = GOOD
        .replace("name: t", "name: '../../../../tmp/x'")
        .replace("  pipe:\n", "  pipe/../../x:\n")
        .replace("repo: pipe", "repo: pipe/../../x")
        .replace("  restart:\n", "  ..:\n");
    assert_eq!(
        errors(&text),
        [
            "plans/bad.yaml:2:7: plan name `../../../../tmp/x` cannot name files: it must start with a letter or a digit",
            "plans/bad.yaml:4:3: repo name `pipe/../../x` cannot name files: it may hold only letters, digits, `.`, `_` and `-`",
            "plans/bad.yaml:15:3: step name `..` cannot name files: it must start with a letter or a digit",
        ]
    );
    assert!(helps(&text)[0].starts_with("plan names become file and directory names"));
}

#[test]
fn an_unsafe_name_behind_an_alias_is_still_refused() {
    let text = GOOD.replace("name: t\n", "") + "kernelci: { api_url: &n '../x' }\nname: *n\n";
    assert_eq!(
        errors(&text),
        [
            "plans/bad.yaml: plan name `../x` cannot name files: it must start with a letter or a digit"
        ]
    );
}

#[test]
fn a_value_that_looks_like_a_location_is_quoted_whole() {
    // serde-saphyr's message quotes the value; a value containing " at line " must not be
    // mistaken for the crate's own location suffix (the message is taken from the structured
    // error, not cut out of its Display text).
    let text = GOOD.replace(
        "name: t\n",
        "name: t\ntimeouts: {connect: \"5 at line 3\"}\n",
    );
    let msg = one_error(&text);
    assert!(msg.starts_with("plans/bad.yaml:3:"), "{msg}");
    assert!(
        msg.contains("invalid duration `5 at line 3`") && msg.contains("such as 30s"),
        "{msg}"
    );
}
