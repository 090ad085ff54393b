//! Who is who: name patterns, identity lists, and the actor sets rules apply to.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::admission::ActorKind;

/// A name pattern where `*` matches any run of characters (as in `system:serviceaccount:ai-agents:*`).
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Pattern(String);

impl Pattern {
    /// A pattern from its text.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` matches (`*` matches any run, including none).
    pub fn matches(&self, candidate: &str) -> bool {
        glob_match(self.0.as_bytes(), candidate.as_bytes())
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Iterative `*` matching with single backtrack point: linear in practice, and no
/// recursion for an attacker-chosen username to blow up.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            resume = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star, matched)) = resume {
            p = star + 1;
            t = matched + 1;
            resume = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Who counts as someone: exact names or `*` patterns.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdentitySpec {
    /// Usernames.
    #[serde(default)]
    pub users: Vec<Pattern>,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<Pattern>,
}

/// Which actors a rule applies to: `agents`, `people`, `controllers`, `everyone`, or a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActorSet {
    /// Agents.
    pub agents: bool,
    /// People.
    pub people: bool,
    /// Controllers.
    pub controllers: bool,
}

impl ActorSet {
    /// Agents only: the default of every `appliesTo`.
    pub const AGENTS: ActorSet = ActorSet {
        agents: true,
        people: false,
        controllers: false,
    };

    /// Whether `actor` is in the set.
    pub fn contains(self, actor: ActorKind) -> bool {
        match actor {
            ActorKind::Agent => self.agents,
            ActorKind::Person => self.people,
            ActorKind::Controller => self.controllers,
        }
    }

    /// How a denial names the actors, as in "the cap of 20 for agent changes".
    pub fn describe(self) -> &'static str {
        match (self.agents, self.people, self.controllers) {
            (true, false, false) => "agent changes",
            (false, true, false) => "changes by people",
            (true, true, false) => "changes by agents and people",
            (true, true, true) => "all changes",
            _ => "changes by the listed actors",
        }
    }

    fn from_names(names: &[String]) -> Result<Self, String> {
        let mut set = ActorSet {
            agents: false,
            people: false,
            controllers: false,
        };
        for name in names {
            match name.as_str() {
                "agents" => set.agents = true,
                "people" => set.people = true,
                "controllers" => set.controllers = true,
                "everyone" => {
                    set = ActorSet {
                        agents: true,
                        people: true,
                        controllers: true,
                    }
                }
                other => {
                    return Err(format!(
                        "unknown actor {other:?}: expected agents, people, controllers or everyone"
                    ));
                }
            }
        }
        if !(set.agents || set.people || set.controllers) {
            return Err("names no actors".to_string());
        }
        Ok(set)
    }

    fn names(self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.agents {
            names.push("agents");
        }
        if self.people {
            names.push("people");
        }
        if self.controllers {
            names.push("controllers");
        }
        names
    }
}

impl Default for ActorSet {
    fn default() -> Self {
        ActorSet::AGENTS
    }
}

impl<'de> Deserialize<'de> for ActorSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let names = match OneOrMany::deserialize(deserializer)? {
            OneOrMany::One(name) => vec![name],
            OneOrMany::Many(names) => names,
        };
        ActorSet::from_names(&names).map_err(serde::de::Error::custom)
    }
}

impl Serialize for ActorSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_patterns_match_service_accounts() {
        let pattern = Pattern::new("system:serviceaccount:ai-agents:*");
        assert!(pattern.matches("system:serviceaccount:ai-agents:fixer"));
        assert!(!pattern.matches("system:serviceaccount:payments:fixer"));
        assert!(Pattern::new("kagent*").matches("kagent"));
        assert!(Pattern::new("*bot*").matches("the-bot-9"));
        assert!(!Pattern::new("exact").matches("exactly"));
        assert!(Pattern::new("a*b*c").matches("aXXbYYc"));
        assert!(!Pattern::new("a*b*c").matches("aXXbYY"));
    }
}
