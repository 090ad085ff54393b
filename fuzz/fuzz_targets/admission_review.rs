//! Arbitrary bytes as the body of a POST to /validate and /mutate: parsed, classified and
//! judged by three guards (the baseline test policy with calm and with stormy SLO
//! figures; the example policies and reflection without Prometheus). Errors are fine;
//! a panic is a bug. Beyond not panicking, every answer must encode, and every patch the
//! mutating webhook returns must apply to the object it was computed for, as the
//! apiserver will apply it.

#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use slo_guard::guard::{Endpoint, Guard, Judgement};
use slo_guard_fuzz::{guards, now};

fuzz_target!(|data: &[u8]| {
    let guards = guards();
    let now = now();
    let debug = std::env::var_os("SLO_GUARD_FUZZ_DEBUG").is_some();
    let judge = |name: &str, guard: &Guard, endpoint: Endpoint| {
        let judgement = guard.review(endpoint, data, now);
        if debug {
            // For triage: `SLO_GUARD_FUZZ_DEBUG=1 fuzz/target/.../admission_review FILE`.
            eprintln!("== {name} {}: {judgement:#?}", endpoint.as_str());
        }
        if let Ok(judgement) = judgement {
            check_answer(data, endpoint, &judgement);
        }
    };
    judge("calm", &guards.calm, Endpoint::Validate);
    judge("calm", &guards.calm, Endpoint::Mutate);
    judge("storm", &guards.storm, Endpoint::Validate);
    judge("examples", &guards.examples, Endpoint::Validate);
    judge("examples", &guards.examples, Endpoint::Mutate);
});

fn check_answer(body: &[u8], endpoint: Endpoint, judgement: &Judgement) {
    let response = &judgement.response;
    let json = response.to_review_json();
    let envelope: serde_json::Value =
        serde_json::from_slice(&json).expect("the AdmissionReview answer is JSON");
    assert_eq!(envelope["response"]["allowed"], response.allowed);
    let _ = response.kubectl_line("slo-guard.io");
    if let Some(decision) = &judgement.decision {
        let _ = format!("{decision:?}");
        for finding in &decision.findings {
            let _ = finding.message();
        }
    }
    let Some(patch) = &response.patch else {
        return;
    };
    assert_eq!(endpoint, Endpoint::Mutate, "only /mutate patches");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("the patch is base64");
    let patch: json_patch::Patch =
        serde_json::from_slice(&bytes).expect("the patch is a JSON Patch");
    // The object as the apiserver sent it (and will patch): request.object.
    let Ok(review) = serde_json::from_slice::<serde_json::Value>(body) else {
        // The typed parse skips unknown fields without validating them (invalid UTF-8 or
        // a lone surrogate in a field slo-guard ignores); as a `Value` such a body does not
        // parse, so there is no object to apply the patch to. A kube-apiserver never
        // sends one.
        return;
    };
    let mut object = review["request"]["object"].clone();
    if let Err(error) = json_patch::patch(&mut object, &patch) {
        panic!(
            "the mutating patch does not apply to request.object: {error}\npatch: {}",
            serde_json::to_string(&patch).unwrap_or_default()
        );
    }
}
