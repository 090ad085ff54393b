//! Golden tests: the exact response JSON for every captured AdmissionReview, from both
//! endpoints. Regenerate with `UPDATE_GOLDEN=1 cargo test --test golden` and review the diff.

mod common;

use chrono::{TimeZone, Utc};
use common::{fixture, fixture_names, guard, root};
use slo_guard::guard::Endpoint;

#[test]
fn responses_match_the_golden_files() {
    let guard = guard();
    let now = Utc.with_ymd_and_hms(2026, 11, 18, 10, 0, 0).unwrap();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let dir = root().join("tests/golden");
    let names = fixture_names();
    assert!(
        names.len() >= 10,
        "expected the captured fixtures, found {names:?}"
    );
    let mut mismatches = Vec::new();
    for name in &names {
        for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
            let judgement = guard
                .review(endpoint, &fixture(name), now)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let value: serde_json::Value =
                serde_json::from_slice(&judgement.response.to_review_json()).unwrap();
            let actual = serde_json::to_string_pretty(&value).unwrap() + "\n";
            let path = dir.join(format!(
                "{}.{}.json",
                name.trim_end_matches(".json"),
                endpoint.as_str()
            ));
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &actual).unwrap();
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(expected) if expected == actual => {}
                Ok(expected) => mismatches.push(format!(
                    "{}:\n--- expected\n{expected}\n+++ actual\n{actual}",
                    path.display()
                )),
                Err(e) => mismatches.push(format!(
                    "{}: {e} (run with UPDATE_GOLDEN=1)",
                    path.display()
                )),
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
