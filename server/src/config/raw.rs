//! One entity occurrence as read from the command line or a YAML item: converted values keyed
//! by schema param, with defaults applied. Both readers go through [`RawEntity`], so keys,
//! conversions, required params and defaults behave identically.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::Problem;
use super::schema::{EntitySpec, Kind, Param};
use super::value::{self, Value};
use super::yaml::{Node, NodeKind};

/// Where an entity came from (it decides the wording of some messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    CommandLine,
    Yaml,
    /// The implicit `node`.
    Implicit,
}

/// An entity with its params converted but not yet validated as a whole.
#[derive(Debug, Clone)]
pub(crate) struct RawEntity {
    pub(crate) spec: &'static EntitySpec,
    pub(crate) source: Source,
    /// `file.yaml:12`, `command line`, or `None` for the implicit node.
    pub(crate) location: Option<String>,
    values: BTreeMap<&'static str, Value>,
    /// Params given explicitly (converted or not), as opposed to defaulted.
    given: BTreeSet<&'static str>,
    /// Where each YAML key was, for precise messages.
    key_locations: BTreeMap<&'static str, String>,
}

impl RawEntity {
    pub(crate) fn new(spec: &'static EntitySpec, source: Source, location: Option<String>) -> Self {
        Self {
            spec,
            source,
            location,
            values: BTreeMap::new(),
            given: BTreeSet::new(),
            key_locations: BTreeMap::new(),
        }
    }

    /// A problem about this entity (or about one of its keys, when `key` is given).
    pub(crate) fn problem(&self, key: Option<&str>, message: impl Into<String>) -> Problem {
        let location = key
            .and_then(|k| self.key_locations.get(k))
            .cloned()
            .or_else(|| self.location.clone());
        Problem {
            location,
            entity: Some(self.spec.name.to_owned()),
            message: message.into(),
        }
    }

    fn lookup(&self, key: &str, problems: &mut Vec<Problem>) -> Option<&'static Param> {
        let found = self.spec.param(&key.to_ascii_lowercase());
        if found.is_none() {
            problems.push(self.problem(
                None,
                format!(
                    "unknown field name {key} (valid fields: {})",
                    self.spec.param_names()
                ),
            ));
        }
        found
    }

    fn bare(&self, problems: &mut Vec<Problem>) -> Option<&'static Param> {
        let found = self.spec.bare_param();
        if found.is_none() {
            problems.push(self.problem(None, "command does not allow bare values"));
        }
        found
    }

    fn store(
        &mut self,
        param: &'static Param,
        converted: Result<Value, String>,
        problems: &mut Vec<Problem>,
    ) {
        match converted {
            Ok(v) => {
                self.values.insert(param.name, v);
            }
            Err(e) => problems.push(self.problem(
                Some(param.name),
                format!("invalid value for {}: {e}", param.name),
            )),
        }
    }

    /// A command-line `key=value`. Repeating a list key appends; repeating any other key is an
    /// error.
    pub(crate) fn set_text(&mut self, key: &str, text: &str, problems: &mut Vec<Problem>) {
        if let Some(param) = self.lookup(key, problems) {
            self.set_text_param(param, text, problems);
        }
    }

    /// A command-line token without `=`.
    pub(crate) fn set_bare_text(&mut self, text: &str, problems: &mut Vec<Problem>) {
        if let Some(param) = self.bare(problems) {
            self.set_text_param(param, text, problems);
        }
    }

    fn set_text_param(&mut self, param: &'static Param, text: &str, problems: &mut Vec<Problem>) {
        let converted = value::from_text(param.kind, text);
        if !self.given.insert(param.name) {
            match (param.kind, converted, self.values.get_mut(param.name)) {
                (Kind::StrList, Ok(Value::List(more)), Some(Value::List(have))) => {
                    have.extend(more);
                }
                (Kind::StrList, Err(e), _) => problems.push(self.problem(
                    Some(param.name),
                    format!("invalid value for {}: {e}", param.name),
                )),
                // An earlier value that did not convert was reported already.
                (Kind::StrList, Ok(_), _) => {}
                _ => problems.push(self.problem(
                    Some(param.name),
                    format!("field {} given more than once", param.name),
                )),
            }
            return;
        }
        self.store(param, converted, problems);
    }

    /// A YAML `key: value` pair of the entity's mapping. A null value counts as absent.
    pub(crate) fn set_yaml(
        &mut self,
        key: &Node,
        value: &Node,
        file: &str,
        problems: &mut Vec<Problem>,
    ) {
        let key_text = match value::yaml_string(key) {
            Ok(k) => k,
            Err(e) => {
                problems.push(Problem {
                    location: Some(format!("{file}:{}", key.line)),
                    entity: Some(self.spec.name.to_owned()),
                    message: format!("invalid field name: {e}"),
                });
                return;
            }
        };
        let Some(param) = self.spec.param(&key_text.to_ascii_lowercase()) else {
            problems.push(Problem {
                location: Some(format!("{file}:{}", key.line)),
                entity: Some(self.spec.name.to_owned()),
                message: format!(
                    "unknown field name {key_text} (valid fields: {})",
                    self.spec.param_names()
                ),
            });
            return;
        };
        self.set_yaml_param(param, value, format!("{file}:{}", key.line), problems);
    }

    /// A YAML scalar given directly as the entity's value (`- log-level: debug`).
    pub(crate) fn set_bare_yaml(&mut self, value: &Node, file: &str, problems: &mut Vec<Problem>) {
        if let Some(param) = self.bare(problems) {
            self.set_yaml_param(param, value, format!("{file}:{}", value.line), problems);
        }
    }

    fn set_yaml_param(
        &mut self,
        param: &'static Param,
        value: &Node,
        location: String,
        problems: &mut Vec<Problem>,
    ) {
        if self.key_locations.contains_key(param.name) {
            problems.push(Problem {
                location: Some(location),
                entity: Some(self.spec.name.to_owned()),
                message: format!("field {} given more than once", param.name),
            });
            return;
        }
        self.key_locations.insert(param.name, location);
        if value.kind == NodeKind::Null {
            return;
        }
        self.given.insert(param.name);
        self.store(param, value::from_yaml(param.kind, value), problems);
    }

    /// Reports missing required params and fills in defaults. Call once, after all params.
    pub(crate) fn finish(&mut self, problems: &mut Vec<Problem>) {
        let missing: Vec<&str> = self
            .spec
            .params
            .iter()
            .filter(|p| p.required && !self.given.contains(p.name))
            .map(|p| p.name)
            .collect();
        if !missing.is_empty() {
            problems.push(self.problem(
                None,
                format!("required parameter(s) missing: {}", missing.join(", ")),
            ));
        }
        for param in self.spec.params {
            if self.given.contains(param.name) {
                continue;
            }
            if let Some(default) = param.default {
                // Defaults are checked by schema::tests::table_is_consistent.
                if let Ok(v) = value::from_text(param.kind, default) {
                    self.values.insert(param.name, v);
                }
            }
        }
    }

    // === typed accessors (absent → the type's empty value) ===

    /// Whether the param was given explicitly.
    pub(crate) fn is_given(&self, key: &str) -> bool {
        self.given.contains(key)
    }

    pub(crate) fn string(&self, key: &str) -> String {
        match self.values.get(key) {
            Some(Value::Str(s)) => s.clone(),
            _ => String::new(),
        }
    }

    /// `None` when absent or empty (Go treats an empty name as "not set").
    pub(crate) fn opt_string(&self, key: &str) -> Option<String> {
        Some(self.string(key)).filter(|s| !s.is_empty())
    }

    pub(crate) fn int(&self, key: &str) -> Option<i64> {
        match self.values.get(key) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }

    pub(crate) fn float(&self, key: &str) -> Option<f64> {
        match self.values.get(key) {
            Some(Value::Float(f)) => Some(*f),
            _ => None,
        }
    }

    pub(crate) fn bool(&self, key: &str) -> bool {
        matches!(self.values.get(key), Some(Value::Bool(true)))
    }

    pub(crate) fn list(&self, key: &str) -> Option<Vec<String>> {
        match self.values.get(key) {
            Some(Value::List(l)) => Some(l.clone()),
            _ => None,
        }
    }

    pub(crate) fn map(&self, key: &str) -> BTreeMap<String, f64> {
        match self.values.get(key) {
            Some(Value::Map(m)) => m.clone(),
            _ => BTreeMap::new(),
        }
    }

    pub(crate) fn duration(&self, key: &str) -> Option<Duration> {
        match self.values.get(key) {
            Some(Value::Duration(d)) => Some(*d),
            _ => None,
        }
    }

    pub(crate) fn rules(&self, key: &str) -> Vec<BTreeMap<String, String>> {
        match self.values.get(key) {
            Some(Value::Rules(r)) => r.clone(),
            _ => Vec::new(),
        }
    }
}
