//! Golden tests: the exact response JSON for every captured AdmissionReview, from both
//! endpoints. Regenerate with `UPDATE_GOLDEN=1 cargo test --test golden` and review the diff.

use chrono::{TimeZone, Utc};
use slo_guard::guard::Endpoint;
use slo_guard_testkit::fixtures::{fixture, fixture_names, guard};
use slo_guard_testkit::root;

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

/// The mutating patch for every captured review applies cleanly (RFC 6902, with the
/// json-patch crate) to the object the apiserver sent, and re-admitting the patched
/// object asks for no further change: no duplicates, no churn.
#[test]
fn mutating_patches_apply_to_the_real_objects_and_are_idempotent() {
    use base64::Engine;
    let guard = guard();
    let now = Utc.with_ymd_and_hms(2026, 11, 18, 10, 0, 0).unwrap();
    let mut patched_any = 0;
    for name in fixture_names() {
        let review: serde_json::Value = serde_json::from_slice(&fixture(&name)).unwrap();
        let judgement = guard
            .review(Endpoint::Mutate, &fixture(&name), now)
            .unwrap();
        let Some(patch) = &judgement.response.patch else {
            continue;
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .expect("base64 patch");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("RFC 6902 JSON Patch");
        let mut object = review["request"]["object"].clone();
        json_patch::patch(&mut object, &patch)
            .unwrap_or_else(|e| panic!("{name}: patch does not apply: {e}"));
        patched_any += 1;

        // Admit the patched object again, as a no-op update of itself.
        let mut again = review.clone();
        again["request"]["oldObject"] = object.clone();
        again["request"]["object"] = object.clone();
        again["request"]["operation"] = serde_json::json!("UPDATE");
        let second = guard
            .review(Endpoint::Mutate, &serde_json::to_vec(&again).unwrap(), now)
            .unwrap();
        if let Some(second_patch) = &second.response.patch {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(second_patch)
                .unwrap();
            panic!(
                "{name}: re-admitting the patched object patches again: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    assert!(
        patched_any >= 4,
        "expected patches for the workload fixtures, got {patched_any}"
    );
}
