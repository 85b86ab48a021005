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
    _private: (),
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
        todo!()
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
        todo!()
    }
}
