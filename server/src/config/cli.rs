//! The command-line tokenizer (spec/control-work-config.md §3.1):
//! `receptor [--<entity> [<param>=<value> | <barevalue>] ...] ... [--config|-c <file.yaml>] ...`

use std::path::{Path, PathBuf};

use super::Problem;
use super::raw::{RawEntity, Source};
use super::schema;
use super::yaml;

/// Where command-line problems are located.
pub(crate) const COMMAND_LINE: &str = "command line";

/// Requests answered before any parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Special {
    Help,
    BashCompletion,
}

/// The entity name of an entity token (`--Node` → `node`), or `None` for a param token.
fn entity_name(token: &str) -> Option<String> {
    let rest = token.strip_prefix('-')?;
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    Some(rest.to_ascii_lowercase())
}

/// `--help`/`-h` or `--bash-completion` anywhere in entity position, or no arguments at all.
pub(crate) fn special(args: &[String]) -> Option<Special> {
    if args.is_empty() {
        return Some(Special::Help);
    }
    let mut skip_next = false;
    for token in args {
        if std::mem::take(&mut skip_next) {
            continue;
        }
        match entity_name(token).as_deref() {
            Some("help" | "h") => return Some(Special::Help),
            Some("bash-completion") => return Some(Special::BashCompletion),
            Some("config" | "c") => skip_next = true,
            _ => {}
        }
    }
    None
}

/// What the command line (and the files it names) holds.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    /// Entities in order; a `--config` file's entities sit where the option was.
    pub(crate) entities: Vec<RawEntity>,
    /// The first `--config`/`-c` path.
    pub(crate) config_file: Option<PathBuf>,
}

/// Reads `args` (without argv[0]) and the YAML files they name.
pub(crate) fn parse(args: &[String], problems: &mut Vec<Problem>) -> Parsed {
    let mut parsed = Parsed::default();
    let at = || Some(COMMAND_LINE.to_owned());
    /// The entity whose params follow.
    enum Current {
        None,
        /// An unknown entity: its params are skipped (the entity was reported).
        Skip,
        Entity(RawEntity),
    }
    let mut current = Current::None;
    let mut config_v2 = false;
    let mut tokens = args.iter();
    while let Some(token) = tokens.next() {
        let Some(name) = entity_name(token) else {
            match &mut current {
                Current::Entity(entity) => match token.split_once('=') {
                    Some((key, value)) => entity.set_text(key, value, problems),
                    None => entity.set_bare_text(token, problems),
                },
                Current::Skip => {}
                Current::None => problems.push(Problem {
                    location: at(),
                    entity: None,
                    message: format!("parameter specified before command: {token}"),
                }),
            }
            continue;
        };
        if let Current::Entity(mut done) = std::mem::replace(&mut current, Current::None) {
            done.finish(problems);
            parsed.entities.push(done);
        }
        if name == "config-v2" {
            // Go's switch to its version 2 front end. Here both layouts go through the one
            // reader (the file's shape says which it is); only the default file differs.
            config_v2 = true;
            continue;
        }
        if name == "config" || name == "c" {
            let Some(file) = tokens.next() else {
                problems.push(Problem {
                    location: at(),
                    entity: None,
                    message: format!("{token} needs a file name"),
                });
                break;
            };
            if parsed.config_file.is_none() {
                parsed.config_file = Some(PathBuf::from(file));
            }
            parsed
                .entities
                .extend(read_config_file(Path::new(file), problems));
            continue;
        }
        match schema::entity(&name) {
            Some(spec) => {
                current = Current::Entity(RawEntity::new(spec, Source::CommandLine, at()));
            }
            None => {
                problems.push(Problem {
                    location: at(),
                    entity: None,
                    message: format!("unknown config type {name}"),
                });
                current = Current::Skip;
            }
        }
    }
    if let Current::Entity(mut done) = current {
        done.finish(problems);
        parsed.entities.push(done);
    }
    if config_v2 && parsed.config_file.is_none() {
        // Go's version 2 default: $HOME/receptor.yaml.
        let file = std::env::var_os("HOME")
            .map_or_else(PathBuf::new, PathBuf::from)
            .join("receptor.yaml");
        parsed.entities.extend(read_config_file(&file, problems));
        parsed.config_file = Some(file);
    }
    parsed
}

/// The entities of the YAML file at `path` (either layout); a file that cannot be read is a
/// problem of the command line.
fn read_config_file(path: &Path, problems: &mut Vec<Problem>) -> Vec<RawEntity> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => yaml::read_entities(&text, &name, problems),
        Err(e) => {
            problems.push(Problem {
                location: Some(COMMAND_LINE.to_owned()),
                entity: None,
                message: format!("could not read config file {name}: {e}"),
            });
            Vec::new()
        }
    }
}
