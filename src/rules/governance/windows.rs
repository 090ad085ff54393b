//! Change freezes: weekly windows (in a time zone, following daylight saving time) and
//! dated ones (`from`/`until` with an offset), and the time-boxed exceptions a person may
//! grant to lift one for a workload, or for one change.
//!
//! An exception is the annotation `slo-guard.io/freeze-exception` on the workload:
//! `<freeze name or *>;until=<RFC 3339>[;change=<decision-id>@<digest>];reason=<text>`.
//! Like an approval, only a person may write it, and slo-guard's mutating webhook stamps
//! who granted it and when (`freeze-exception-by`, `freeze-exception-at`). It counts only
//! as stored on the workload (the object before the request, or the parent of a scale),
//! stamped by a person, not expired, and no longer than `windows.maxException` from its
//! stamp to its `until`.

use std::time::Duration;

use chrono::{
    DateTime, Datelike, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime,
    SecondsFormat, TimeZone, Utc,
};

use crate::admission::{ActorKind, ChangeClass};
use crate::annotations::{
    EXCEPTION_KEYS, FREEZE_EXCEPTION, FREEZE_EXCEPTION_AT, FREEZE_EXCEPTION_BY,
};
use crate::policy::{ClockTime, DEFAULT_MAX_EXCEPTION, FreezeWindow, valid_window_name};
use crate::rules::{Finding, Rule, RuleInput};

use super::STAMP_SKEW;

/// The longest reason an exception may carry.
const MAX_REASON: usize = 1024;

/// A parsed `slo-guard.io/freeze-exception` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezeException {
    /// The freeze it lifts, by name; `None` for `*`, every freeze of the policy.
    pub window: Option<String>,
    /// When it stops counting (exclusive).
    pub until: DateTime<FixedOffset>,
    /// The one change it is for (`<decision-id>@<digest>`), if it is bound to one.
    pub change: Option<(String, String)>,
    pub reason: String,
}

impl FreezeException {
    /// Parses `<name or *>;until=<RFC 3339>[;change=<decision-id>@<digest>];reason=<text>`.
    /// `reason` comes last and runs to the end, so it may hold `;`.
    pub fn parse(value: &str) -> Result<Self, String> {
        const FORM: &str = "expected <freeze name or *>;until=<RFC 3339 time>;reason=<text>, optionally with ;change=<decision-id>@<digest> before reason";
        let (selector, mut rest) = value
            .split_once(';')
            .ok_or_else(|| format!("{value:?}: {FORM}"))?;
        let selector = selector.trim();
        let window = match selector {
            "*" => None,
            name if valid_window_name(name) => Some(name.to_string()),
            other => {
                return Err(format!(
                    "{other:?} names no freeze: use a freeze's name or *; {FORM}"
                ));
            }
        };
        let mut until = None;
        let mut change = None;
        let mut reason = None;
        while !rest.is_empty() {
            let rest_trimmed = rest.trim_start();
            if let Some(text) = rest_trimmed.strip_prefix("reason=") {
                reason = Some(text.trim().to_string());
                break;
            }
            let (item, after) = rest_trimmed.split_once(';').unwrap_or((rest_trimmed, ""));
            rest = after;
            let (key, text) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not key=value; {FORM}"))?;
            let text = text.trim();
            match key.trim() {
                "until" if until.is_none() => {
                    until = Some(DateTime::parse_from_rfc3339(text).map_err(|e| {
                        format!(
                            "until={text:?} is not an RFC 3339 time with an offset, such as 2026-12-24T18:00:00+01:00 ({e})"
                        )
                    })?);
                }
                "change" if change.is_none() => {
                    let (decision, digest) = text
                        .rsplit_once('@')
                        .filter(|(d, g)| !d.is_empty() && !g.is_empty())
                        .ok_or_else(|| format!("change={text:?} is not <decision-id>@<digest>"))?;
                    change = Some((decision.to_string(), digest.to_string()));
                }
                "until" | "change" => return Err(format!("{} is given twice", key.trim())),
                other => return Err(format!("unknown field {other:?}; {FORM}")),
            }
        }
        let until = until.ok_or_else(|| format!("no until=; {FORM}"))?;
        let reason = reason
            .filter(|r| !r.is_empty())
            .ok_or_else(|| format!("no reason=<text>; {FORM}"))?;
        if reason.chars().count() > MAX_REASON {
            return Err(format!("the reason is longer than {MAX_REASON} characters"));
        }
        Ok(Self {
            window,
            until,
            change,
            reason,
        })
    }

    fn covers(&self, window: &FreezeWindow) -> bool {
        match &self.window {
            None => true,
            Some(name) => window.name.as_deref() == Some(name.as_str()),
        }
    }
}

fn human(duration: Duration) -> String {
    let minutes = duration.as_secs() / 60;
    match minutes {
        0..60 => format!("{minutes}m"),
        _ if minutes % 60 == 0 => format!("{}h", minutes / 60),
        _ => format!("{}h{:02}m", minutes / 60, minutes % 60),
    }
}

fn max_exception(input: &RuleInput<'_>) -> Duration {
    input
        .policy
        .spec
        .windows
        .as_ref()
        .map_or(DEFAULT_MAX_EXCEPTION, |w| w.max_exception())
}

fn stamp(time: DateTime<FixedOffset>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The instant a local wall-clock time names in `tz`. In a daylight-saving gap (a time
/// that does not exist), the first instant after it; at a fold, the first of the two.
fn instant_of(tz: chrono_tz::Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let mut probe = local;
    for _ in 0..=180 {
        match tz.from_local_datetime(&probe) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                return t.with_timezone(&Utc);
            }
            LocalResult::None => probe += chrono::Duration::minutes(1),
        }
    }
    Utc.from_utc_datetime(&local)
}

/// Whether a weekly window holds at `now`, and if so when this occurrence of it ends.
fn weekly_occurrence(
    window: &FreezeWindow,
    tz: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let local = now.with_timezone(&tz);
    let time = local.time();
    let date = local.date_naive();
    let time_of = |clock: Option<ClockTime>| clock.map(ClockTime::time);
    let (start, end) = (time_of(window.start), time_of(window.end));
    let today = local.weekday();
    let yesterday = today.pred();
    let day_end = |date: NaiveDate, end: Option<NaiveTime>| match end {
        Some(end) => instant_of(tz, date.and_time(end)),
        None => instant_of(tz, date.succ_opt().unwrap_or(date).and_time(NaiveTime::MIN)),
    };
    let on = |day| window.days.contains(&day);
    match (start, end) {
        (None, None) => on(today).then(|| day_end(date, None)),
        (Some(start), None) => (on(today) && time >= start).then(|| day_end(date, None)),
        (None, Some(end)) => (on(today) && time < end).then(|| day_end(date, Some(end))),
        (Some(start), Some(end)) if start < end => {
            (on(today) && time >= start && time < end).then(|| day_end(date, Some(end)))
        }
        // An overnight window belongs to the day it starts on.
        (Some(start), Some(end)) => {
            if on(today) && time >= start {
                Some(day_end(date.succ_opt().unwrap_or(date), Some(end)))
            } else if on(yesterday) && time < end {
                Some(day_end(date, Some(end)))
            } else {
                None
            }
        }
    }
}

/// Whether `window` holds at `now`, and when it ends: for a weekly window, the end of
/// the run of occurrences (a Saturday-and-Sunday freeze ends on Monday at 00:00).
pub(in crate::rules) fn freeze_end(
    window: &FreezeWindow,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if let (Some(from), Some(until)) = (window.from, window.until) {
        return (from <= now && now < until).then(|| until.with_timezone(&Utc));
    }
    let tz = window.timezone?;
    let mut end = weekly_occurrence(window, tz, now)?;
    // At most a week of back-to-back occurrences.
    for _ in 0..8 {
        match weekly_occurrence(window, tz, end) {
            Some(next) if next > end => end = next,
            _ => break,
        }
    }
    Some(end)
}

/// When `window` next begins after `now`: its `from` for a dated window, else the first
/// local start (or midnight) over the coming week at which it holds.
pub(in crate::rules) fn next_freeze_start(
    window: &FreezeWindow,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if let Some(from) = window.from {
        let from = from.with_timezone(&Utc);
        return (from > now).then_some(from);
    }
    let tz = window.timezone?;
    let today = now.with_timezone(&tz).date_naive();
    let start = window.start.map_or(NaiveTime::MIN, ClockTime::time);
    (0..=8)
        .filter_map(|days| today.checked_add_days(chrono::Days::new(days)))
        .map(|date| instant_of(tz, date.and_time(start)))
        .find(|instant| *instant > now && freeze_end(window, *instant).is_some())
}

/// Each freeze window of the policy that applies to this change's actor and class: its
/// name as denials give it, when it ends if it is in force, and when it next begins.
pub(in crate::rules) fn window_spans(
    input: &RuleInput<'_>,
    now: DateTime<Utc>,
) -> Vec<crate::rules::WindowSpan> {
    let Some(windows) = input.policy.spec.windows.as_ref() else {
        return Vec::new();
    };
    if matches!(
        input.change.class,
        ChangeClass::Metadata | ChangeClass::Config
    ) {
        return Vec::new();
    }
    windows
        .freeze
        .iter()
        .filter(|window| window.applies_to.contains(input.actor))
        .map(|window| {
            let ends = freeze_end(window, now);
            crate::rules::WindowSpan {
                window: describe(window),
                ends,
                // A freeze in force next begins after this run of it ends.
                next_start: next_freeze_start(window, ends.unwrap_or(now)),
            }
        })
        .collect()
}

/// `end` as the window reads it: in its offset (dated) or its time zone (weekly).
fn in_window_time(window: &FreezeWindow, end: DateTime<Utc>) -> DateTime<FixedOffset> {
    match (window.until, window.timezone) {
        (Some(until), _) => end.with_timezone(until.offset()),
        (None, Some(tz)) => end.with_timezone(&tz).fixed_offset(),
        (None, None) => end.fixed_offset(),
    }
}

/// How a denial names a window: its name and its period.
fn describe(window: &FreezeWindow) -> String {
    let period = match (window.from, window.until, window.timezone) {
        (Some(from), Some(until), _) => format!("{} to {}", stamp(from), stamp(until)),
        (_, _, tz) => {
            let days: Vec<String> = window.days.iter().map(|d| d.to_string()).collect();
            let hours = match (&window.start, &window.end) {
                (None, None) => "all day".to_string(),
                (start, end) => format!(
                    "{}-{}",
                    start.map_or_else(|| "00:00".to_string(), |t| t.to_string()),
                    end.map_or_else(|| "24:00".to_string(), |t| t.to_string())
                ),
            };
            let tz = tz.map_or_else(|| "UTC".to_string(), |tz| tz.to_string());
            format!("{} {hours} ({tz})", days.join(", "))
        }
    };
    match &window.name {
        Some(name) => format!("{name} ({period})"),
        None => period,
    }
}

/// Whether the exception stored on the workload lifts `window` for this change:
/// `Ok(())` if it does, `Err(why not)` if there is one that does not count, and
/// `Err("")` if there is none.
fn exception_lifts(
    input: &RuleInput<'_>,
    window: &FreezeWindow,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let Some(stored) = super::stored_annotations(input) else {
        return Err(String::new());
    };
    let Some(value) = stored.get(FREEZE_EXCEPTION) else {
        return Err(String::new());
    };
    let exception = FreezeException::parse(value).map_err(|e| format!("it is malformed: {e}"))?;
    if !exception.covers(window) {
        return Err(format!(
            "it is for freeze {}, not this one",
            exception.window.as_deref().unwrap_or("*")
        ));
    }
    let Some(by) = stored.get(FREEZE_EXCEPTION_BY) else {
        return Err(format!(
            "it has no {FREEZE_EXCEPTION_BY} stamp, so no person is known to have granted it"
        ));
    };
    if *by == input.change.requester.username && input.actor != ActorKind::Person {
        return Err(format!("it was granted by {by}, the requester itself"));
    }
    if !super::stamped_by_person(by, &input.policy.spec) {
        return Err(format!(
            "it was granted by {by}, which is not a person; only people grant exceptions"
        ));
    }
    let Some(at) = stored
        .get(FREEZE_EXCEPTION_AT)
        .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
    else {
        return Err(format!("it has no valid {FREEZE_EXCEPTION_AT} stamp"));
    };
    let until = exception.until.with_timezone(&Utc);
    if until <= now {
        return Err(format!("it expired at {}", stamp(exception.until)));
    }
    let at_utc = at.with_timezone(&Utc);
    if at_utc > now + chrono::Duration::from_std(STAMP_SKEW).unwrap_or_default() {
        return Err(format!(
            "its {FREEZE_EXCEPTION_AT} stamp {at} is in the future"
        ));
    }
    let max = max_exception(input);
    let length = (until - at_utc).to_std().unwrap_or_default();
    if length > max {
        return Err(format!(
            "it runs {} from {} to {}, longer than windows.maxException {}",
            human(length),
            stamp(at),
            stamp(exception.until),
            human(max)
        ));
    }
    if let Some((decision, digest)) = &exception.change {
        let own = input.agent_context.decision_id;
        if own != Some(decision.as_str()) || input.identity.digest() != digest {
            return Err(format!(
                "it is for change {decision}@{digest}, not this one ({}@{})",
                own.unwrap_or("<no decision-id>"),
                input.identity.digest()
            ));
        }
    }
    Ok(())
}

/// The command a person runs to lift `window` for this workload until `until`.
fn exception_command(input: &RuleInput<'_>, window: &FreezeWindow, until: &str) -> String {
    format!(
        "kubectl annotate {} {FREEZE_EXCEPTION}='{};until={until};reason=<why>' --overwrite",
        super::kubectl_resource(input),
        window.name.as_deref().unwrap_or("*"),
    )
}

/// Freeze windows: weekly ones in the window's own time zone, so daylight saving time
/// moves them with the wall clock; dated ones between `from` (inclusive) and `until`
/// (exclusive). A valid exception on the workload lifts a freeze.
pub(in crate::rules) fn check_windows(
    input: &RuleInput<'_>,
    now: DateTime<Utc>,
) -> Option<Finding> {
    let windows = input.policy.spec.windows.as_ref()?;
    if matches!(
        input.change.class,
        ChangeClass::Metadata | ChangeClass::Config
    ) {
        return None;
    }
    for window in &windows.freeze {
        if !window.applies_to.contains(input.actor) {
            continue;
        }
        let Some(end) = freeze_end(window, now) else {
            continue;
        };
        let unheld = match exception_lifts(input, window, now) {
            Ok(()) => continue,
            Err(why) if why.is_empty() => String::new(),
            Err(why) => format!("; the freeze exception on the workload does not count: {why}"),
        };
        let description = describe(window);
        let end_local = in_window_time(window, end);
        let clock = match window.timezone {
            Some(tz) if !window.is_dated() => {
                format!(
                    "it is {} there, and ",
                    now.with_timezone(&tz).format("%a %H:%M %Z")
                )
            }
            _ => String::new(),
        };
        let max = max_exception(input);
        let suggested = end.min(now + chrono::Duration::from_std(max).unwrap_or_default());
        let command = exception_command(input, window, &stamp(in_window_time(window, suggested)));
        let who = if window.applies_to.people {
            "ask a person to lift it for this workload"
        } else {
            "ask a person to make the change, or to lift the freeze for this workload"
        };
        // An agent's decision can be named, so that the exception lifts the freeze for
        // this change and no other.
        let only = input
            .agent_context
            .decision_id
            .filter(|_| input.actor == ActorKind::Agent)
            .map(|decision| {
                format!(
                    "; for this change only, put ;change={decision}@{} before the reason",
                    input.identity.digest()
                )
            })
            .unwrap_or_default();
        return Some(input.finding(
            Rule::ChangeWindow,
            format!(
                "change freeze {description} is in force for {}; {clock}it ends at {}{unheld}",
                window.applies_to.describe(),
                stamp(end_local),
            ),
            format!(
                "Wait until {}, or {who} (at most {}): {command}{only}",
                stamp(end_local),
                human(max)
            ),
            format!(
                "change freeze {} until {}",
                window.name.as_deref().unwrap_or(&description),
                stamp(end_local)
            ),
        ));
    }
    None
}

/// Only people grant freeze exceptions, and only slo-guard stamps who and when. An agent
/// (or a controller) that adds, changes or removes any exception key is denied; so is a
/// person who writes the stamps by hand, or an exception that is malformed, already
/// expired, or longer than `windows.maxException`.
pub(in crate::rules) fn check_exception_keys(
    input: &RuleInput<'_>,
    now: DateTime<Utc>,
) -> Option<Finding> {
    let (new, changed) = super::written_keys(input, EXCEPTION_KEYS)?;
    let requester = &input.change.requester.username;
    let resource = super::kubectl_resource(input);
    if input.actor != ActorKind::Person {
        return Some(input.finding(
            Rule::FreezeException,
            format!(
                "agents cannot grant, extend or withdraw freeze exceptions: {requester} ({}) changed {}",
                input.actor.as_str(),
                changed.join(", ")
            ),
            format!(
                "Leave {FREEZE_EXCEPTION} alone; a person grants one with kubectl annotate {resource} {FREEZE_EXCEPTION}='<freeze>;until=<time>;reason=<why>' --overwrite"
            ),
            format!(
                "agents cannot grant freeze exceptions: {requester} changed {}",
                changed.join(", ")
            ),
        ));
    }
    let stamped = super::Stamp::read(
        new,
        &changed,
        [FREEZE_EXCEPTION_BY, FREEZE_EXCEPTION_AT],
        requester,
        now,
    );
    let value = new.get(FREEZE_EXCEPTION);
    let granted = changed.contains(&FREEZE_EXCEPTION) && value.is_some();
    let without_stamp = granted && (stamped.by != Some(requester) || stamped.at.is_none());
    if stamped.forged || without_stamp {
        return Some(input.finding(
            Rule::FreezeException,
            format!(
                "{FREEZE_EXCEPTION_BY} and {FREEZE_EXCEPTION_AT} are stamped by slo-guard from the granting person's identity, and this request sets them otherwise ({})",
                changed.join(", ")
            ),
            format!(
                "Set only {FREEZE_EXCEPTION}; if this persists, the slo-guard mutating webhook is not running"
            ),
            "freeze-exception-by/-at are stamped by slo-guard only".to_string(),
        ));
    }
    let (Some(value), true) = (value, granted) else {
        return None;
    };
    let problem = match FreezeException::parse(value) {
        Err(error) => Some(format!("it is malformed: {error}")),
        Ok(exception) => {
            let until = exception.until.with_timezone(&Utc);
            let max = max_exception(input);
            let length = (until - now).to_std().unwrap_or_default();
            if until <= now {
                Some(format!(
                    "until {} has already passed",
                    stamp(exception.until)
                ))
            } else if length > max {
                Some(format!(
                    "it would run {} until {}, longer than windows.maxException {}",
                    human(length),
                    stamp(exception.until),
                    human(max)
                ))
            } else {
                None
            }
        }
    }?;
    Some(input.finding(
        Rule::FreezeException,
        format!("the freeze exception {value:?} is refused: {problem}"),
        format!(
            "Grant it as <freeze name or *>;until=<RFC 3339 time, at most {} from now>;reason=<why>",
            human(max_exception(input))
        ),
        format!("freeze exception refused: {problem}"),
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::admission::Change;
    use crate::policy::Mode;
    use crate::rules::Decision;
    use crate::rules::testing::*;

    const HOLIDAY: &str = "{name: holiday-freeze, from: \"2026-12-20T00:00:00+01:00\", until: \"2027-01-04T00:00:00+01:00\", appliesTo: agents}";
    const ALICE: &str = "alice@example.com";

    fn windows_policy(windows: &str) -> String {
        format!(
            "match: {{kinds: [Deployment]}}\nagents: {{users: [\"system:serviceaccount:ai-agents:*\"], requireAnnotations: []}}\nwindows: {windows}"
        )
    }

    fn decide_at(policy: &str, change: &Change, now: DateTime<Utc>) -> Decision {
        judge_at(policy, change, now, None)
    }

    fn rule(decision: &Decision, rule: Rule) -> Option<&Finding> {
        decision.findings.iter().find(|f| f.rule == rule)
    }

    fn frozen(policy: &str, change: &Change, now: &str) -> Option<Finding> {
        rule(&decide_at(policy, change, at(now)), Rule::ChangeWindow).cloned()
    }

    /// An agent rollout of a workload that stores `stored` (an exception and its stamps).
    fn agent_rollout_over(stored: &[(&str, &str)]) -> Change {
        let stored: BTreeMap<String, String> = stored
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut change = rollout_by(AGENT);
        change.annotations.before = stored.clone();
        let mut annotations = full_context();
        annotations.extend(stored);
        change.annotations.after = Some(annotations);
        change
    }

    fn exception(value: &str, by: &str, at: &str) -> Change {
        agent_rollout_over(&[
            (FREEZE_EXCEPTION, value),
            (FREEZE_EXCEPTION_BY, by),
            (FREEZE_EXCEPTION_AT, at),
        ])
    }

    #[test]
    fn exceptions_parse_and_say_what_is_wrong() {
        let parsed = FreezeException::parse(
            "holiday-freeze;until=2026-12-24T18:00:00+01:00;reason=INC-1; hotfix",
        )
        .unwrap();
        assert_eq!(parsed.window.as_deref(), Some("holiday-freeze"));
        assert_eq!(parsed.until, at("2026-12-24T17:00:00Z"));
        assert_eq!(parsed.reason, "INC-1; hotfix");
        assert_eq!(parsed.change, None);
        let bound =
            FreezeException::parse("*;until=2026-12-24T18:00:00Z;change=d-1@abc123;reason=x")
                .unwrap();
        assert_eq!(bound.window, None);
        assert_eq!(
            bound.change,
            Some(("d-1".to_string(), "abc123".to_string()))
        );
        for (value, expected) in [
            ("holiday-freeze", "expected <freeze name or *>"),
            ("holiday-freeze;reason=x", "no until="),
            (
                "holiday-freeze;until=2026-12-24T18:00:00+01:00",
                "no reason=",
            ),
            (
                "holiday-freeze;until=2026-12-24T18:00:00+01:00;reason=  ",
                "no reason=",
            ),
            (
                "holiday-freeze;until=2026-12-24 18:00;reason=x",
                "not an RFC 3339 time",
            ),
            (
                "holiday-freeze;until=2026-12-24T18:00:00;reason=x",
                "not an RFC 3339 time",
            ),
            (
                "bad name;until=2026-12-24T18:00:00Z;reason=x",
                "names no freeze",
            ),
            (
                "*;until=2026-12-24T18:00:00Z;for=x;reason=x",
                "unknown field \"for\"",
            ),
            (
                "*;until=2026-12-24T18:00:00Z;until=2026-12-24T19:00:00Z;reason=x",
                "given twice",
            ),
            (
                "*;until=2026-12-24T18:00:00Z;change=nodigest;reason=x",
                "not <decision-id>@<digest>",
            ),
        ] {
            let error = FreezeException::parse(value).expect_err(value);
            assert!(error.contains(expected), "{value}: {error}");
        }
    }

    #[test]
    fn a_dated_freeze_holds_from_its_start_until_its_end_in_its_offset() {
        let policy = windows_policy(&format!("{{freeze: [{HOLIDAY}]}}"));
        let change = rollout_by(AGENT).with_annotations(&full_context());
        // 2026-12-20T00:00:00+01:00 is 2026-12-19T23:00:00Z: from is inclusive.
        assert!(frozen(&policy, &change, "2026-12-19T22:59:59Z").is_none());
        assert!(frozen(&policy, &change, "2026-12-19T23:00:00Z").is_some());
        assert!(frozen(&policy, &change, "2027-01-03T22:59:59Z").is_some());
        // until is exclusive.
        assert!(frozen(&policy, &change, "2027-01-03T23:00:00Z").is_none());
        // People are not held by a freeze for agents.
        assert!(frozen(&policy, &rollout_by(PERSON), "2026-12-24T12:00:00Z").is_none());
        let finding = frozen(&policy, &change, "2026-12-24T12:00:00Z").unwrap();
        assert_eq!(
            finding.message(),
            format!(
                "[payments/checkout:change-window] rollout of Deployment payments/checkout blocked: change freeze holiday-freeze (2026-12-20T00:00:00+01:00 to 2027-01-04T00:00:00+01:00) is in force for agent changes; it ends at 2027-01-04T00:00:00+01:00. Wait until 2027-01-04T00:00:00+01:00, or ask a person to make the change, or to lift the freeze for this workload (at most 24h): kubectl annotate deployment/checkout -n payments slo-guard.io/freeze-exception='holiday-freeze;until=2026-12-25T13:00:00+01:00;reason=<why>' --overwrite; for this change only, put ;change=7f3a9c2e-1b4d-4e8a-9c6f-2d1e0b7a5c3f@{} before the reason.",
                change.content_digest()
            )
        );
        assert_eq!(
            finding.brief,
            "change freeze holiday-freeze until 2027-01-04T00:00:00+01:00"
        );
        // The suggested exception ends with the freeze when that comes first.
        let near_end = frozen(&policy, &change, "2027-01-03T20:00:00Z").unwrap();
        assert!(
            near_end
                .remedy
                .contains("'holiday-freeze;until=2027-01-04T00:00:00+01:00;reason=<why>'"),
            "{}",
            near_end.remedy
        );
    }

    #[test]
    fn dated_freezes_read_any_offset_and_scale_requests_too() {
        // The same instant written in another offset is the same freeze.
        let policy = windows_policy(
            "{freeze: [{from: \"2026-12-20T04:30:00+05:30\", until: \"2026-12-21T04:30:00+05:30\", appliesTo: everyone}]}",
        );
        let finding = frozen(&policy, &rollout_by(PERSON), "2026-12-19T23:00:00Z").unwrap();
        assert!(
            finding.headline.contains(
                "change freeze 2026-12-20T04:30:00+05:30 to 2026-12-21T04:30:00+05:30 is in force for all changes; it ends at 2026-12-21T04:30:00+05:30"
            ),
            "{}",
            finding.headline
        );
        // An unnamed freeze is lifted by an exception for every freeze (*).
        assert!(
            finding.remedy.contains(
                "slo-guard.io/freeze-exception='*;until=2026-12-21T04:30:00+05:30;reason=<why>'"
            ),
            "{}",
            finding.remedy
        );
        assert!(frozen(&policy, &rollout_by(PERSON), "2026-12-19T22:59:59Z").is_none());
        assert!(frozen(&policy, &rollout_by(PERSON), "2026-12-20T23:00:00Z").is_none());
        let scale = scale_by(AGENT, Some(3), 4).with_annotations(&scale_context());
        assert!(frozen(&policy, &scale, "2026-12-20T12:00:00Z").is_some());
    }

    #[test]
    fn a_weekly_freeze_names_its_end_in_its_time_zone() {
        let policy = windows_policy(
            "{freeze: [{name: weekend, days: [Sat, Sun], timezone: Europe/Berlin, appliesTo: agents}]}",
        );
        let change = rollout_by(AGENT).with_annotations(&full_context());
        // Saturday 00:30 in Berlin; the Saturday-and-Sunday freeze ends Monday 00:00.
        let finding = frozen(&policy, &change, "2026-11-20T23:30:00Z").unwrap();
        assert!(
            finding.headline.contains("change freeze weekend (Sat, Sun all day (Europe/Berlin)) is in force for agent changes; it is Sat 00:30 CET there, and it ends at 2026-11-23T00:00:00+01:00"),
            "{}",
            finding.headline
        );
        // Over daylight saving time: the spring-forward Sunday 01:00-03:30 ends at 03:30 CEST.
        let dst = windows_policy(
            "{freeze: [{days: [Sun], start: \"01:00\", end: \"03:30\", timezone: Europe/Berlin, appliesTo: everyone}]}",
        );
        let finding = frozen(&dst, &rollout_by(PERSON), "2026-03-29T00:30:00Z").unwrap();
        assert!(
            finding
                .headline
                .contains("it ends at 2026-03-29T03:30:00+02:00"),
            "{}",
            finding.headline
        );
        // An overnight window ends the next morning.
        let overnight = windows_policy(
            "{freeze: [{days: [Fri], start: \"22:00\", end: \"06:00\", timezone: UTC, appliesTo: agents}]}",
        );
        let finding = frozen(&overnight, &change, "2026-11-20T23:00:00Z").unwrap();
        assert!(
            finding.headline.contains("it ends at 2026-11-21T06:00:00Z"),
            "{}",
            finding.headline
        );
    }

    #[test]
    fn a_persons_stamped_exception_lifts_the_freeze_until_it_expires() {
        let policy = windows_policy(&format!("{{freeze: [{HOLIDAY}], maxException: 12h}}"));
        let now = "2026-12-24T12:00:00Z";
        let valid = exception(
            "holiday-freeze;until=2026-12-24T18:00:00+01:00;reason=INC-4711 hotfix",
            ALICE,
            "2026-12-24T11:30:00Z",
        );
        let decision = decide_at(&policy, &valid, at(now));
        assert!(decision.allowed(), "{:#?}", decision.findings);
        // `*` lifts every freeze of the policy.
        let star = exception(
            "*;until=2026-12-24T18:00:00+01:00;reason=x",
            ALICE,
            "2026-12-24T11:30:00Z",
        );
        assert!(frozen(&policy, &star, now).is_none());
        // At its until it no longer counts (until is exclusive), and the denial says why.
        let expired = frozen(&policy, &valid, "2026-12-24T17:00:00Z").unwrap();
        assert!(
            expired.headline.ends_with(
                "; the freeze exception on the workload does not count: it expired at 2026-12-24T18:00:00+01:00"
            ),
            "{}",
            expired.headline
        );
        let cases = [
            (
                exception(
                    "other-freeze;until=2026-12-24T18:00:00+01:00;reason=x",
                    ALICE,
                    "2026-12-24T11:30:00Z",
                ),
                "it is for freeze other-freeze, not this one",
            ),
            (
                exception(
                    "holiday-freeze;until=2026-12-24T18:00:00+01:00;reason=x",
                    AGENT,
                    "2026-12-24T11:30:00Z",
                ),
                "granted by system:serviceaccount:ai-agents:fixer, the requester itself",
            ),
            (
                exception(
                    "holiday-freeze;until=2026-12-24T18:00:00+01:00;reason=x",
                    "system:serviceaccount:ai-agents:other",
                    "2026-12-24T11:30:00Z",
                ),
                "which is not a person",
            ),
            (
                exception(
                    "holiday-freeze;until=2026-12-24T18:00:00+01:00;reason=x",
                    HPA_CONTROLLER,
                    "2026-12-24T11:30:00Z",
                ),
                "which is not a person",
            ),
            // Forged: no stamps, or no time stamp.
            (
                agent_rollout_over(&[(
                    FREEZE_EXCEPTION,
                    "holiday-freeze;until=2026-12-24T18:00:00+01:00;reason=x",
                )]),
                "has no slo-guard.io/freeze-exception-by stamp",
            ),
            (
                agent_rollout_over(&[
                    (
                        FREEZE_EXCEPTION,
                        "holiday-freeze;until=2026-12-24T18:00:00+01:00;reason=x",
                    ),
                    (FREEZE_EXCEPTION_BY, ALICE),
                ]),
                "has no valid slo-guard.io/freeze-exception-at stamp",
            ),
            // Longer than maxException (12h) from its stamp.
            (
                exception(
                    "holiday-freeze;until=2026-12-25T18:00:00+01:00;reason=x",
                    ALICE,
                    "2026-12-24T11:30:00Z",
                ),
                "it runs 29h30m from 2026-12-24T11:30:00Z to 2026-12-25T18:00:00+01:00, longer than windows.maxException 12h",
            ),
            (
                exception(
                    "holiday-freeze;until=2026-12-24T18:00:00+01:00;reason=x",
                    ALICE,
                    "2026-12-24T13:30:00Z",
                ),
                "is in the future",
            ),
            (
                exception(
                    "holiday-freeze until tomorrow",
                    ALICE,
                    "2026-12-24T11:30:00Z",
                ),
                "it is malformed",
            ),
        ];
        for (change, expected) in cases {
            let finding = frozen(&policy, &change, now).expect(expected);
            assert!(
                finding
                    .headline
                    .contains("; the freeze exception on the workload does not count: ")
                    && finding.headline.contains(expected),
                "{expected}: {}",
                finding.headline
            );
        }
    }

    #[test]
    fn an_exception_bound_to_a_change_lifts_the_freeze_for_that_change_only() {
        let policy = windows_policy(&format!("{{freeze: [{HOLIDAY}]}}"));
        let probe = rollout_by(AGENT).with_annotations(&full_context());
        let digest = probe.content_digest();
        let decision = full_context()["slo-guard.io/decision-id"].clone();
        let value = format!(
            "holiday-freeze;until=2026-12-24T18:00:00+01:00;change={decision}@{digest};reason=hotfix"
        );
        let bound = exception(&value, ALICE, "2026-12-24T11:30:00Z");
        assert!(frozen(&policy, &bound, "2026-12-24T12:00:00Z").is_none());
        // The denial of the change names the binding that lifts the freeze for it.
        let denial = frozen(&policy, &probe, "2026-12-24T12:00:00Z").unwrap();
        assert!(
            denial.remedy.ends_with(&format!(
                "; for this change only, put ;change={decision}@{digest} before the reason"
            )),
            "{}",
            denial.remedy
        );
        let mut other = bound.clone();
        other
            .annotations
            .after
            .as_mut()
            .unwrap()
            .insert("slo-guard.io/decision-id".into(), "another-decision".into());
        let finding = frozen(&policy, &other, "2026-12-24T12:00:00Z").unwrap();
        assert!(
            finding.headline.contains(&format!(
                "it is for change {decision}@{digest}, not this one (another-decision@"
            )),
            "{}",
            finding.headline
        );
    }

    fn annotate(username: &str, stored: &[(&str, &str)], written: &[(&str, &str)]) -> Change {
        let to_map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut change = rollout_by(username);
        change.class = ChangeClass::Metadata;
        change.annotations.before = to_map(stored);
        change.annotations.after = Some(to_map(written));
        change
    }

    #[test]
    fn only_a_person_grants_an_exception_and_only_slo_guard_stamps_it() {
        let policy = windows_policy(&format!("{{freeze: [{HOLIDAY}]}}"));
        let now = at("2026-12-24T12:00:00Z");
        let value = "holiday-freeze;until=2026-12-24T18:00:00+01:00;reason=hotfix";
        let stamped = [
            (FREEZE_EXCEPTION, value),
            (FREEZE_EXCEPTION_BY, ALICE),
            (FREEZE_EXCEPTION_AT, "2026-12-24T12:00:00Z"),
        ];
        // A person's grant, as the mutating webhook stamps it.
        let decision = decide_at(&policy, &annotate(ALICE, &[], &stamped), now);
        assert!(decision.findings.is_empty(), "{:#?}", decision.findings);
        // An agent granting, extending, stamping or withdrawing one: denied.
        let extended = "holiday-freeze;until=2026-12-25T18:00:00+01:00;reason=hotfix";
        type Pairs<'a> = Vec<(&'a str, &'a str)>;
        let attempts: [(&[(&str, &str)], Pairs); 4] = [
            (&[], vec![(FREEZE_EXCEPTION, value)]),
            (
                &stamped,
                vec![(FREEZE_EXCEPTION, extended), stamped[1], stamped[2]],
            ),
            (&[], vec![(FREEZE_EXCEPTION_BY, ALICE)]),
            (&stamped, vec![]),
        ];
        for (stored, written) in attempts {
            let decision = decide_at(&policy, &annotate(AGENT, stored, &written), now);
            let finding = rule(&decision, Rule::FreezeException).expect("denied");
            assert_eq!(finding.mode, Mode::Enforce);
            assert!(
                finding
                    .headline
                    .contains("agents cannot grant, extend or withdraw freeze exceptions: system:serviceaccount:ai-agents:fixer (agent) changed"),
                "{}",
                finding.headline
            );
        }
        // So is an agent's create that carries one.
        let mut create = create_by(AGENT, 2).with_annotations(&full_context());
        create
            .annotations
            .after
            .as_mut()
            .unwrap()
            .insert(FREEZE_EXCEPTION.into(), value.into());
        assert!(
            rule(
                &decide_at(&policy, &create, at("2026-11-18T10:00:00Z")),
                Rule::FreezeException
            )
            .is_some()
        );
        // A person who writes the stamps by hand, for someone else or backdated: refused.
        for forged in [
            [
                stamped[0],
                (FREEZE_EXCEPTION_BY, "bob@example.com"),
                stamped[2],
            ],
            [
                stamped[0],
                stamped[1],
                (FREEZE_EXCEPTION_AT, "2026-12-20T00:00:00Z"),
            ],
        ] {
            let decision = decide_at(&policy, &annotate(ALICE, &[], &forged), now);
            assert!(
                rule(&decision, Rule::FreezeException)
                    .expect("refused")
                    .headline
                    .contains("are stamped by slo-guard"),
            );
        }
        // Without the stamp (the mutating webhook did not run): refused.
        let decision = decide_at(&policy, &annotate(ALICE, &[], &stamped[..1]), now);
        assert!(rule(&decision, Rule::FreezeException).is_some());
        // A person's exception that is too long, already over, or malformed: refused at once.
        for (value, expected) in [
            (
                "holiday-freeze;until=2026-12-26T00:00:00+01:00;reason=x",
                "it would run 35h until 2026-12-26T00:00:00+01:00, longer than windows.maxException 24h",
            ),
            (
                "holiday-freeze;until=2026-12-24T12:00:00+01:00;reason=x",
                "until 2026-12-24T12:00:00+01:00 has already passed",
            ),
            ("holiday-freeze;until=tomorrow;reason=x", "it is malformed"),
        ] {
            let written = [(FREEZE_EXCEPTION, value), stamped[1], stamped[2]];
            let decision = decide_at(&policy, &annotate(ALICE, &[], &written), now);
            let finding = rule(&decision, Rule::FreezeException).expect(expected);
            assert!(
                finding.headline.contains(expected),
                "{expected}: {}",
                finding.headline
            );
        }
        // A person withdrawing an exception, with its stamps: fine.
        let decision = decide_at(&policy, &annotate(ALICE, &stamped, &[]), now);
        assert!(decision.findings.is_empty(), "{:#?}", decision.findings);
    }
}
