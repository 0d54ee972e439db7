//! A PR's tree cannot make a step read host files through a link: the checkout refuses it,
//! naming the path and the change that brought it, and the step fails without running.

mod common;

use common::*;
use git2::Repository;

/// Branch `name` off `main` adding a symlink `path` → `target`.
fn branch_with_link(repo: &Repository, main: git2::Oid, name: &str, path: &str, target: &str) {
    let base = repo.find_commit(main).expect("main");
    let blob = repo.blob(target.as_bytes()).expect("blob");
    let (dir, file) = path.split_once('/').expect("dir/file");
    let old_dir = base
        .tree()
        .expect("tree")
        .get_path(std::path::Path::new(dir))
        .ok()
        .map(|e| repo.find_tree(e.id()).expect("subtree"));
    let mut sub = repo.treebuilder(old_dir.as_ref()).expect("builder");
    sub.insert(file, blob, 0o120000).expect("link");
    let sub = sub.write().expect("write");
    let mut root = repo
        .treebuilder(Some(&base.tree().expect("tree")))
        .expect("builder");
    root.insert(dir, sub, 0o040000).expect("dir");
    let tree = repo.find_tree(root.write().expect("write")).expect("tree");
    let sig = git2::Signature::new(ALICE.0, ALICE.1, &git2::Time::new(NOW - DAY, 0)).expect("sig");
    let head = repo
        .commit(None, &sig, &sig, "a link", &tree, &[&base])
        .expect("commit");
    kcideploy::gitops::scratch::set_branch(repo, name, head).expect("branch");
}

#[test]
fn a_link_out_of_the_checkout_is_refused_naming_the_change() {
    let fx = Fixture::new();
    let remote = fx.repo("pipe", &[("config/a.yaml", Some("a: 1\n"))]);
    branch_with_link(
        &remote.repo,
        remote.main,
        "pr/1",
        "config/passwd",
        "/etc/passwd",
    );
    let read = fx.path().join("read.txt");
    let plan = fx.plan_file(&ONE_STEP_PLAN.replace(
        r#"with: { run: ["true"] }"#,
        &format!(
            r#"with: {{ repo: pipe, shell: "cat config/passwd > {}" }}"#,
            read.display()
        ),
    ));
    let (code, out, err) = output(
        kcideploy()
            .args(["apply", "-auto-approve", "--cycle", "partial", "-f"])
            .arg(&plan)
            .args(["--at", at().as_str()]),
    );
    assert_eq!(code, 1, "{out}{err}");
    let all = out + &err;
    assert!(
        all.contains("refused to export `config/passwd`: the link points to the absolute path /etc/passwd (brought by pr/1 by alice@example.org)"),
        "{all}"
    );
    assert!(!read.exists(), "the step never ran with the link");
}
