//! `--config FILE --tls-client NAME`: TLS settings from a receptor YAML configuration, as
//! the Python receptorctl's `readconfig` takes them.

use std::path::Path;

use anyhow::{Context, Result, bail};
use saphyr_parser::{Event, Parser};

/// A YAML value, as much as a `tls-client` entry needs.
#[derive(Debug, Clone, PartialEq)]
enum Yaml {
    Scalar(String),
    Seq(Vec<Yaml>),
    Map(Vec<(String, Yaml)>),
}

/// Deepest nesting accepted: receptor configurations are three levels deep.
const MAX_DEPTH: usize = 32;

fn parse(text: &str) -> Result<Option<Yaml>> {
    enum Frame {
        Seq(Vec<Yaml>),
        Map(Vec<(String, Yaml)>, Option<String>),
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut parser = Parser::new_from_str(text);
    while let Some(event) = parser.next_event() {
        let (event, _) = event.map_err(|e| anyhow::anyhow!("{}", e.info()))?;
        let done = match event {
            Event::Scalar(text, ..) => Some(Yaml::Scalar(text.into_owned())),
            Event::SequenceStart(..) => {
                stack.push(Frame::Seq(Vec::new()));
                None
            }
            Event::MappingStart(..) => {
                stack.push(Frame::Map(Vec::new(), None));
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq(items)) => Some(Yaml::Seq(items)),
                Some(Frame::Map(entries, _)) => Some(Yaml::Map(entries)),
                None => bail!("unbalanced YAML"),
            },
            Event::Alias(_) => bail!("YAML aliases are not supported here"),
            Event::DocumentEnd | Event::StreamEnd => break,
            _ => None,
        };
        if stack.len() > MAX_DEPTH {
            bail!("YAML nested too deeply");
        }
        let Some(value) = done else { continue };
        match stack.last_mut() {
            None => return Ok(Some(value)),
            Some(Frame::Seq(items)) => items.push(value),
            Some(Frame::Map(entries, key)) => match key.take() {
                None => match value {
                    Yaml::Scalar(k) => *key = Some(k),
                    _ => bail!("only scalar mapping keys are supported"),
                },
                Some(k) => entries.push((k, value)),
            },
        }
    }
    Ok(None)
}

/// The settings a `tls-client` entry gives.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct TlsClient {
    pub(crate) rootcas: Option<String>,
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) insecureskipverify: bool,
}

/// Finds the `tls-client` named `name` in the configuration at `path`. Like receptorctl, a
/// missing entry leaves every setting at its default.
pub(crate) fn tls_client(path: &Path, name: &str) -> Result<TlsClient> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    tls_client_from(&text, name).with_context(|| format!("in {}", path.display()))
}

fn tls_client_from(text: &str, name: &str) -> Result<TlsClient> {
    let mut found = TlsClient::default();
    let Some(Yaml::Seq(items)) = parse(text)? else {
        bail!("the configuration is not a list of entities");
    };
    for item in items {
        let Yaml::Map(entries) = item else { continue };
        for (kind, value) in entries {
            let Yaml::Map(fields) = value else { continue };
            if kind != "tls-client" {
                continue;
            }
            let get = |k: &str| {
                fields.iter().find_map(|(fk, v)| match v {
                    Yaml::Scalar(s) if fk == k => Some(s.clone()),
                    _ => None,
                })
            };
            if get("name").as_deref() != Some(name) {
                continue;
            }
            found.rootcas = get("rootcas");
            found.cert = get("cert");
            found.key = get("key");
            found.insecureskipverify = get("insecureskipverify").is_some_and(|v| {
                matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "on" | "1")
            });
            return Ok(found);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_named_tls_client() {
        let yaml = "---\n- node:\n    id: n1\n- tls-client:\n    name: other\n    rootcas: /x\n\
                    - tls-client:\n    name: ctl\n    rootcas: /ca.crt\n    cert: /c.crt\n    key: /c.key\n    insecureskipverify: true\n";
        let t = tls_client_from(yaml, "ctl").unwrap();
        assert_eq!(
            t,
            TlsClient {
                rootcas: Some("/ca.crt".into()),
                cert: Some("/c.crt".into()),
                key: Some("/c.key".into()),
                insecureskipverify: true
            }
        );
        assert_eq!(tls_client_from(yaml, "none").unwrap(), TlsClient::default());
        assert!(tls_client_from("a: b\n", "x").is_err());
    }
}
