//! What earlier releases wrote must still read: states and saved plans written by the main
//! branch before the architecture change (tests/fixtures/compat/, made by `kcideploy demo`,
//! `plan -out`, `show --json`, and a blame run) parse, and write back the same JSON.

mod common;

use common::*;
use serde_json::Value;

fn fixture(name: &str) -> (String, Value) {
    let path = format!(
        "{}/tests/fixtures/compat/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    (path, value)
}

#[test]
fn states_of_the_previous_release_read_and_write_back_unchanged() {
    for name in ["demo.state.json", "blame.state.json"] {
        let (path, value) = fixture(name);
        let state: kcideploy::state::State =
            serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(!state.history.is_empty(), "{path}: history read");
        let again = serde_json::to_value(&state).expect("serialize");
        assert_eq!(again, value, "{path}: written back differently");
        // And through the backend, as apply reads it.
        let dir = tempfile::tempdir().expect("tmp");
        let copy = dir.path().join(name);
        std::fs::copy(&path, &copy).expect("copy");
        let read = kcideploy::state::LocalState::new(copy)
            .read()
            .expect("the backend reads it")
            .expect("exists");
        assert_eq!(read.serial, state.serial);
    }
    let (_, blame) = fixture("blame.state.json");
    assert_eq!(blame["blames"][0]["verdict"], "blamed");
    assert_eq!(blame["exclusions"][0]["reason"], "blamed");
}

#[test]
fn saved_plans_of_the_previous_release_read_and_write_back_unchanged() {
    for name in ["demo.saved-plan.json", "blame.saved-plan.json"] {
        let (path, value) = fixture(name);
        let plan: kcideploy::planner::Plan =
            serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{path}: {e}"));
        let again = serde_json::to_value(&plan).expect("serialize");
        assert_eq!(again, value, "{path}: written back differently");
    }
}

#[test]
fn show_json_prints_what_the_previous_release_printed() {
    let saved = format!(
        "{}/tests/fixtures/compat/demo.saved-plan.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let (code, out, err) = output(kcideploy().args(["show", "--json"]).arg(&saved));
    assert_eq!(code, 0, "{out}{err}");
    let (_, expected) = fixture("demo.show.json");
    let shown: Value = serde_json::from_str(&out).expect("show --json is JSON");
    assert_eq!(shown, expected);
}
