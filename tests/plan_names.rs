//! A plan, repo or step name cannot make kcideploy write outside its state directory.

use assert_cmd::Command;

#[test]
fn plan_with_a_name_that_climbs_out_writes_nothing_outside() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("a/b/c");
    std::fs::create_dir_all(dir.join("repos")).expect("mkdir");
    git2::Repository::init_bare(dir.join("repos/pipe.git")).expect("init");
    let plan = "version: 1\nname: '../../../escaped'\nrepos:\n  pipe: { url: repos/pipe.git }\n";
    std::fs::write(dir.join("plan.yaml"), plan).expect("write");
    let out = Command::cargo_bin("kcideploy")
        .expect("binary")
        .current_dir(&dir)
        .env("XDG_STATE_HOME", root.path().join("a/b/c/xdg"))
        .args(["plan", "-f", "plan.yaml"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("plan name `../../../escaped` cannot name files"),
        "{stderr}"
    );
    // Only the plan's own directory tree exists.
    let entries = |p: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(p)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(entries(root.path()), ["a"]);
    assert_eq!(entries(&root.path().join("a")), ["b"]);
    assert_eq!(entries(&root.path().join("a/b")), ["c"]);
}
