//! The bodies of the cargo-fuzz targets in `fuzz/` that exercise this crate. Each takes
//! arbitrary bytes, feeds them to one untrusted-input path without I/O, and asserts what must
//! hold: nothing panics, errors are errors (a failed parse says why), and what is accepted
//! round-trips. `receptor_mesh::fuzzing::smoke` drives them on stable in the unit tests.
//!
//! Compiled for this crate's unit tests and with the `fuzzing` feature only: the assertions
//! panic on purpose, which library code must never do.

use prost::Message as _;
use receptor_proto::v1 as pb;

use crate::config::{self, Invocation};
use crate::control::command;
use crate::grpc::{mesh, work as grpc_work};
use crate::work::remote::{self, RemoteExtra};
use crate::work::{Status, UnitId};

/// `control_line`: every line (split at LF, CRs dropped, invalid UTF-8 replaced, as the
/// control session does) through the classic control-line parser.
pub fn control_line(data: &[u8]) {
    for line in data.split(|&b| b == b'\n') {
        let line: Vec<u8> = line.iter().copied().filter(|&b| b != b'\r').collect();
        if line.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let parsed = command::parse(&text);
        if let command::Parsed::Errors(errors) = &parsed {
            assert!(
                !errors.is_empty(),
                "a refused line gives no error: {text:?}"
            );
        }
        assert_eq!(
            command::parse(&text),
            parsed,
            "parsing is not deterministic"
        );
    }
}

/// `config_cli`: NUL-separated arguments through the command-line parser. Inputs naming a
/// `--config` file are skipped: reading arbitrary paths is not what is under test (the YAML
/// reader is, in [`config_yaml`]).
pub fn config_cli(data: &[u8]) {
    let args: Vec<String> = data
        .split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    let names_a_file = args.iter().any(|arg| {
        let name = arg.trim_start_matches('-').to_ascii_lowercase();
        arg.starts_with('-') && (name == "config" || name == "c")
    });
    if names_a_file {
        return;
    }
    match config::from_args(args) {
        Ok(Invocation::Run(config)) => {
            let _ = config::unsupported(&config);
        }
        Ok(Invocation::Print(text)) => assert!(!text.is_empty(), "nothing to print"),
        Err(error) => check_config_error(&error),
    }
}

/// `config_yaml`: a configuration file's text through the YAML reader and the `reload` item
/// comparison. Whatever the full reader accepts, the layout check accepts too.
pub fn config_yaml(data: &[u8]) {
    // Configuration files are read with `read_to_string`: only UTF-8 reaches the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let full = config::from_yaml_str(text, "fuzz.yaml");
    if let Err(error) = &full {
        check_config_error(error);
    }
    // Only the layout is checked here: an item may even have an empty name (`- !tag`), which
    // the full reader refuses.
    let items = config::canonical_items(text, "fuzz.yaml");
    if let Err(error) = &items {
        check_config_error(error);
    }
    assert!(
        full.is_err() || items.is_ok(),
        "the configuration is valid but its layout was refused: {items:?}"
    );
}

fn check_config_error(error: &config::ConfigError) {
    assert!(
        !error.problems.is_empty(),
        "a config error without problems"
    );
    for problem in &error.problems {
        assert!(!problem.message.is_empty(), "a problem without a message");
    }
    let _ = error.to_string();
}

/// `status_file`: a unit's `status` file as read back from disk. What parses must write back
/// to bytes that parse to the same status; its `ExtraData` goes through what the engine does
/// with it (a remote unit's secrets filter and expiry).
pub fn status_file(data: &[u8]) {
    let Ok(status) = Status::parse(data) else {
        return;
    };
    let bytes = status.to_file_bytes();
    match Status::parse(&bytes) {
        Ok(again) => assert_eq!(again, status, "the status file does not round-trip"),
        Err(e) => panic!("a written status file does not parse: {e}"),
    }
    let _ = (status.state.name(), status.state.is_final());
    let _ = remote::public_extra_data(status.extra_data.as_deref());
    if let Some(extra) = RemoteExtra::parse(status.extra_data.as_deref()) {
        let _ = extra.expires_at();
    }
}

/// `grpc_request`: the first byte picks a request message of `receptor.v1`, the rest is
/// decoded as that message with prost, and what decodes goes through the checks and
/// conversions the service runs before any operation.
pub fn grpc_request(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 8 {
        0 => {
            let Ok(request) = pb::SubmitRequest::decode(bytes) else {
                return;
            };
            let Some(pb::submit_request::Request::Header(header)) = request.request else {
                return;
            };
            let Ok(submit) = grpc_work::submit_request(header) else {
                return;
            };
            assert!(!submit.node.is_empty() && !submit.work_type.is_empty());
            // The remote branch of the engine's submit, without its configuration checks.
            let _ = submit.params.keys().any(|key| remote::is_secret(key));
            if !submit.ttl.is_empty()
                && let Ok(ttl) = config::parse_duration(&submit.ttl)
            {
                let _ = remote::expiration(Some(ttl));
            }
        }
        1 => {
            if let Ok(request) = pb::PingRequest::decode(bytes)
                && let Ok((count, interval)) = mesh::ping_options(&request)
            {
                assert!(count > 0 && interval <= std::time::Duration::from_secs(3600));
            }
        }
        2 => {
            if let Ok(request) = pb::TracerouteRequest::decode(bytes) {
                let _ = mesh::required(&request.node, "node");
            }
        }
        3 => {
            if let Ok(request) = pb::ConnectRequest::decode(bytes)
                && let Ok(open) = mesh::connect_open(Some(request))
            {
                assert!(!open.node.is_empty() && !open.service.is_empty());
            }
        }
        4 => {
            if let Ok(request) = pb::ResultsRequest::decode(bytes)
                && grpc_work::check_results(&request).is_ok()
            {
                assert!(request.offset >= 0);
                let _ = UnitId::parse(&request.unit_id);
            }
        }
        5 => {
            if let Ok(request) = pb::CancelRequest::decode(bytes)
                && grpc_work::required_unit(&request.unit_id).is_ok()
            {
                let _ = UnitId::parse(&request.unit_id);
            }
        }
        6 => {
            if let Ok(request) = pb::ReleaseRequest::decode(bytes)
                && grpc_work::required_unit(&request.unit_id).is_ok()
            {
                let _ = UnitId::parse(&request.unit_id);
            }
        }
        _ => {
            if let Ok(request) = pb::WatchRequest::decode(bytes) {
                let _ = UnitId::parse(&request.unit_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use receptor_mesh::fuzzing::smoke;

    use super::*;

    #[test]
    fn control_line_smoke() {
        smoke("control_line", 20_000, control_line);
    }

    #[test]
    fn config_cli_smoke() {
        smoke("config_cli", 5_000, config_cli);
    }

    #[test]
    fn config_yaml_smoke() {
        smoke("config_yaml", 5_000, config_yaml);
    }

    #[test]
    fn status_file_smoke() {
        smoke("status_file", 20_000, status_file);
    }

    #[test]
    fn grpc_request_smoke() {
        smoke("grpc_request", 20_000, grpc_request);
    }
}
