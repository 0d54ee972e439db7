//! `plan --diff`: under each affected component, the unified diffs of the changed files it
//! matched (and only those), capped by `--diff-lines`; the same hunks in `--json`.

mod common;

use common::*;

const PLAN: &str = r#"version: 1
name: t
repos:
  pipe: { url: repos/pipe.git, pending: { branches: "pr/*" } }
components:
  config: { repo: pipe, paths: ["config/**"] }
  src: { repo: pipe, paths: ["src/**"] }
  docs: { repo: pipe, paths: ["doc/**"] }
steps:
  restart: { kind: command, on: [config, src], with: { run: ["true"] } }
"#;

fn numbered(n: usize, f: impl Fn(usize) -> String) -> String {
    (0..n).map(|i| format!("{}\n", f(i))).collect()
}

#[test]
fn diffs_of_the_matching_files_only_capped_and_in_json() {
    let fx = Fixture::new();
    let a_old = numbered(10, |i| format!("key{i}: {i}"));
    let a_new = a_old.replace("key5: 5", "key5: 50");
    let big_old = numbered(200, |i| format!("line {i}"));
    let big_new = numbered(200, |i| format!("line {}", i + 1000));
    let remote = fx.repo(
        "pipe",
        &[
            ("config/a.yaml", Some(&a_old)),
            ("config/big.yaml", Some(&big_old)),
            ("src/x.py", Some("print('x')\n")),
            ("doc/readme.md", Some("doc\n")),
        ],
    );
    remote.branch(
        "pr/1",
        ALICE,
        &[
            ("config/a.yaml", Some(&a_new)),
            ("config/big.yaml", Some(&big_new)),
            ("src/x.py", Some("print('y')\n")),
        ],
    );
    let config = fx.config(PLAN);
    fx.deploy(&config, &[("pipe", remote.main)], Some(NOW - 3600));
    let plan = |extra: &[&str]| {
        let (code, out, err) = output(
            kcideploy()
                .args(["plan", "--cycle", "partial", "--at", &at(), "-f"])
                .arg(&config.path)
                .args(extra),
        );
        assert_eq!(code, 0, "{out}{err}");
        out
    };
    let text = plan(&[]);
    assert!(!text.contains("Changed files"), "only with --diff: {text}");

    let text = plan(&["--diff", "--diff-lines", "6"]);
    assert!(text.contains("Changed files, by component:"), "{text}");
    assert!(text.contains("config/a.yaml modified [pr/1]"), "{text}");
    assert!(
        text.contains("      -key5: 5\n      +key5: 50"),
        "the changed line with its context: {text}"
    );
    assert!(text.contains("      @@ -4,5 +4,5 @@"), "{text}");
    assert!(!text.contains("key0"), "context is 2 lines: {text}");
    assert!(text.contains("… "), "the big file is capped: {text}");
    assert!(text.contains("more lines (--diff-lines)"), "{text}");
    assert!(!text.contains("doc/readme.md"), "an unchanged file: {text}");

    let (code, out, err) = output(
        kcideploy()
            .args([
                "plan",
                "--cycle",
                "partial",
                "--json",
                "--diff",
                "--diff-lines",
                "6",
                "--at",
                &at(),
                "-f",
            ])
            .arg(&config.path),
    );
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
    let diffs = doc["file_diffs"].as_array().expect("file_diffs");
    let of = |component: &str| -> Vec<String> {
        diffs
            .iter()
            .filter(|d| d["component"] == component)
            .map(|d| d["path"].as_str().expect("path").to_string())
            .collect()
    };
    assert_eq!(of("config"), ["config/a.yaml", "config/big.yaml"]);
    assert_eq!(of("src"), ["src/x.py"]);
    assert!(of("docs").is_empty());
    let a = diffs
        .iter()
        .find(|d| d["path"] == "config/a.yaml")
        .expect("a.yaml");
    let lines: Vec<&str> = a["hunks"][0]["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert_eq!(
        lines,
        [
            " key3: 3",
            " key4: 4",
            "-key5: 5",
            "+key5: 50",
            " key6: 6",
            " key7: 7"
        ]
    );
    let big = diffs
        .iter()
        .find(|d| d["path"] == "config/big.yaml")
        .expect("big.yaml");
    assert!(
        big["omitted_lines"].as_u64().expect("omitted") > 300,
        "{big}"
    );
}
