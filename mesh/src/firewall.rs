//! Firewall rules for data messages (spec/wire.md §9): pure evaluation, first match wins,
//! no match accepts.

use std::collections::BTreeMap;

/// What a matching rule does with a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let it through.
    Accept,
    /// Discard and send a `blocked by firewall` unreachable to the sender.
    Reject,
    /// Discard silently.
    Drop,
}

/// One rule: an action and up to four matchers that must all match.
#[derive(Debug, Clone)]
pub struct Rule {
    action: Action,
    from_node: Option<Matcher>,
    from_service: Option<Matcher>,
    to_node: Option<Matcher>,
    to_service: Option<Matcher>,
}

/// One field's matcher.
#[derive(Debug, Clone)]
enum Matcher {
    Exact(String),
    /// Compiled already anchored, so `is_match` means a whole-string match.
    Regex(regex::Regex),
}

impl Matcher {
    fn parse(value: &str) -> Result<Self, RuleError> {
        let Some(rest) = value.strip_prefix('/') else {
            return Ok(Self::Exact(value.to_owned()));
        };
        let Some(pattern) = rest.strip_suffix('/') else {
            return Err(RuleError::InvalidRegex {
                value: value.to_owned(),
                reason: "missing closing /".to_owned(),
            });
        };
        // The group keeps an alternation inside the anchors: `/a|b/` must not become `^a|b$`.
        regex::Regex::new(&format!("^(?:{pattern})$"))
            .map(Self::Regex)
            .map_err(|e| RuleError::InvalidRegex {
                value: value.to_owned(),
                reason: e.to_string(),
            })
    }

    fn matches(&self, field: &str) -> bool {
        match self {
            Self::Exact(s) => s == field,
            Self::Regex(re) => re.is_match(field),
        }
    }
}

/// An absent matcher matches anything.
fn field_matches(matcher: Option<&Matcher>, field: &str) -> bool {
    matcher.is_none_or(|m| m.matches(field))
}

/// Why a rule from the configuration is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// No `action` key.
    #[error("firewall rule has no action")]
    MissingAction,
    /// `action` is not accept, reject or drop.
    #[error("invalid firewall action {0:?}: expected accept, reject or drop")]
    InvalidAction(String),
    /// A key other than action, fromnode, tonode, fromservice, toservice.
    #[error("unknown firewall rule key {0:?}")]
    UnknownKey(String),
    /// The same key twice, differing only in case: which one Go would use is map order.
    #[error("duplicate firewall rule key {0:?}")]
    DuplicateKey(String),
    /// A `/regex/` value that does not compile (or lacks its closing `/`).
    #[error("invalid firewall regex {value:?}: {reason}")]
    InvalidRegex {
        /// The configured value.
        value: String,
        /// The compiler's complaint.
        reason: String,
    },
}

impl Rule {
    /// Parses a rule from its configuration map (keys case-insensitive). A value `/RE/` is an
    /// anchored regex `^RE$`; anything else is an exact match. Unlike Go, a malformed regex is
    /// an error instead of being silently dropped from the rule.
    ///
    /// # Errors
    /// See [`RuleError`].
    pub fn parse(map: &BTreeMap<String, String>) -> Result<Self, RuleError> {
        let mut action = None;
        let mut from_node = None;
        let mut from_service = None;
        let mut to_node = None;
        let mut to_service = None;
        for (key, value) in map {
            let slot = match key.to_ascii_lowercase().as_str() {
                "action" => {
                    let parsed = match value.to_ascii_lowercase().as_str() {
                        "accept" => Action::Accept,
                        "reject" => Action::Reject,
                        "drop" => Action::Drop,
                        _ => return Err(RuleError::InvalidAction(value.clone())),
                    };
                    if action.replace(parsed).is_some() {
                        return Err(RuleError::DuplicateKey(key.clone()));
                    }
                    continue;
                }
                "fromnode" => &mut from_node,
                "fromservice" => &mut from_service,
                "tonode" => &mut to_node,
                "toservice" => &mut to_service,
                _ => return Err(RuleError::UnknownKey(key.clone())),
            };
            if slot.replace(Matcher::parse(value)?).is_some() {
                return Err(RuleError::DuplicateKey(key.clone()));
            }
        }
        Ok(Self {
            action: action.ok_or(RuleError::MissingAction)?,
            from_node,
            from_service,
            to_node,
            to_service,
        })
    }

    /// What this rule does when it matches.
    pub fn action(&self) -> Action {
        self.action
    }

    /// Whether every configured field matches (a rule without fields matches everything).
    pub fn matches(
        &self,
        from_node: &str,
        from_service: &str,
        to_node: &str,
        to_service: &str,
    ) -> bool {
        field_matches(self.from_node.as_ref(), from_node)
            && field_matches(self.from_service.as_ref(), from_service)
            && field_matches(self.to_node.as_ref(), to_node)
            && field_matches(self.to_service.as_ref(), to_service)
    }
}

/// An ordered rule list.
#[derive(Debug, Clone, Default)]
pub struct Firewall {
    rules: Vec<Rule>,
}

impl Firewall {
    /// A firewall from rules in evaluation order.
    pub fn new(rules: Vec<Rule>) -> Self {
        Self { rules }
    }

    /// The first matching rule's action, or [`Action::Accept`].
    pub fn evaluate(
        &self,
        from_node: &str,
        from_service: &str,
        to_node: &str,
        to_service: &str,
    ) -> Action {
        self.rules
            .iter()
            .find(|rule| rule.matches(from_node, from_service, to_node, to_service))
            .map_or(Action::Accept, Rule::action)
    }

    /// Whether there are no rules (everything is accepted).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pairs: &[(&str, &str)]) -> Result<Rule, RuleError> {
        let map = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Rule::parse(&map)
    }

    fn firewall(rules: &[&[(&str, &str)]]) -> Firewall {
        Firewall::new(rules.iter().map(|r| rule(r).expect("valid rule")).collect())
    }

    /// (from_node, from_service, to_node, to_service)
    type Msg = (&'static str, &'static str, &'static str, &'static str);

    fn check(fw: &Firewall, cases: &[(Msg, Action)]) {
        for ((fnode, fsvc, tnode, tsvc), want) in cases {
            assert_eq!(
                fw.evaluate(fnode, fsvc, tnode, tsvc),
                *want,
                "{fnode}:{fsvc} -> {tnode}:{tsvc}"
            );
        }
    }

    #[test]
    fn no_rules_accepts_everything() {
        let fw = Firewall::default();
        assert!(fw.is_empty());
        check(&fw, &[(("a", "x", "b", "y"), Action::Accept)]);
    }

    #[test]
    fn exact_match() {
        let fw = firewall(&[&[("action", "reject"), ("fromnode", "evil")]]);
        check(
            &fw,
            &[
                (("evil", "s", "b", "ping"), Action::Reject),
                (("Evil", "s", "b", "ping"), Action::Accept),
                (("evil2", "s", "b", "ping"), Action::Accept),
                (("good", "s", "evil", "ping"), Action::Accept),
            ],
        );
    }

    #[test]
    fn regex_match_is_anchored() {
        let fw = firewall(&[
            &[("action", "drop"), ("tonode", "/(?i)node-[ab]/")],
            &[("action", "reject"), ("toservice", "/ping|control/")],
        ]);
        check(
            &fw,
            &[
                (("x", "s", "node-a", "t"), Action::Drop),
                (("x", "s", "NODE-B", "t"), Action::Drop),
                (("x", "s", "node-c", "t"), Action::Accept),
                (("x", "s", "my-node-a", "t"), Action::Accept),
                (("x", "s", "node-ab", "t"), Action::Accept),
                // The alternation stays inside the anchors.
                (("x", "s", "c", "ping"), Action::Reject),
                (("x", "s", "c", "control"), Action::Reject),
                (("x", "s", "c", "pingx"), Action::Accept),
                (("x", "s", "c", "xcontrol"), Action::Accept),
            ],
        );
    }

    #[test]
    fn all_fields_must_match() {
        let fw = firewall(&[&[
            ("action", "drop"),
            ("fromnode", "a"),
            ("fromservice", "/svc.*/"),
            ("tonode", "b"),
            ("toservice", "ping"),
        ]]);
        check(
            &fw,
            &[
                (("a", "svc1", "b", "ping"), Action::Drop),
                (("z", "svc1", "b", "ping"), Action::Accept),
                (("a", "nosvc", "b", "ping"), Action::Accept),
                (("a", "svc1", "z", "ping"), Action::Accept),
                (("a", "svc1", "b", "pong"), Action::Accept),
            ],
        );
    }

    #[test]
    fn first_match_wins() {
        let fw = firewall(&[
            &[("action", "accept"), ("fromnode", "trusted")],
            &[("action", "reject"), ("toservice", "control")],
            &[("action", "drop")],
        ]);
        check(
            &fw,
            &[
                (("trusted", "s", "b", "control"), Action::Accept),
                (("other", "s", "b", "control"), Action::Reject),
                (("other", "s", "b", "ping"), Action::Drop),
            ],
        );
    }

    #[test]
    fn keys_and_action_are_case_insensitive() {
        let r = rule(&[("Action", "REJECT"), ("FromNode", "a"), ("TONODE", "b")]).expect("valid");
        assert_eq!(r.action(), Action::Reject);
        assert!(r.matches("a", "x", "b", "y"));
        assert!(!r.matches("a", "x", "c", "y"));
        for (value, want) in [
            ("accept", Action::Accept),
            ("Drop", Action::Drop),
            ("reJect", Action::Reject),
        ] {
            assert_eq!(rule(&[("action", value)]).expect(value).action(), want);
        }
    }

    #[test]
    fn rule_errors() {
        let cases: &[(&[(&str, &str)], RuleError)] = &[
            (&[], RuleError::MissingAction),
            (&[("fromnode", "a")], RuleError::MissingAction),
            (
                &[("action", "allow")],
                RuleError::InvalidAction("allow".into()),
            ),
            (
                &[("action", "drop"), ("fromhost", "a")],
                RuleError::UnknownKey("fromhost".into()),
            ),
            (
                &[("action", "drop"), ("Action", "accept")],
                RuleError::DuplicateKey("action".into()),
            ),
            (
                &[("action", "drop"), ("tonode", "b"), ("ToNode", "c")],
                RuleError::DuplicateKey("tonode".into()),
            ),
        ];
        for (pairs, want) in cases {
            assert_eq!(rule(pairs).err().as_ref(), Some(want), "{pairs:?}");
        }

        // Go silently drops these matchers, widening the rule; we refuse them.
        for bad in ["/", "/abc", "/(unclosed/", "/a{2,1}/", "/[z-a]/"] {
            match rule(&[("action", "drop"), ("fromnode", bad)]) {
                Err(RuleError::InvalidRegex { value, reason }) => {
                    assert_eq!(value, bad);
                    assert!(!reason.is_empty());
                }
                other => panic!("{bad}: {other:?}"),
            }
        }

        // Slashes elsewhere are just characters, and `//` is the regex matching "".
        let r = rule(&[("action", "drop"), ("fromnode", "a/b/")]).expect("exact");
        assert!(r.matches("a/b/", "", "", ""));
        let r = rule(&[("action", "drop"), ("fromnode", "//")]).expect("empty regex");
        assert!(r.matches("", "", "", ""));
        assert!(!r.matches("a", "", "", ""));
    }
}
