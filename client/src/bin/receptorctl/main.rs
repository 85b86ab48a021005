//! `receptorctl` on the gRPC client library: the Python receptorctl's commands, options,
//! environment variables, output and exit codes, plus `--json` everywhere, `work watch`,
//! `status --graph` and progress bars on a terminal.
//!
//! It takes the same `--socket` as the Python receptorctl (the classic control socket) and
//! upgrades the connection to gRPC, so scripts keep working unchanged.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod commands;
mod config;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit code for errors not specific to a command (click usage errors included).
const EXIT_ERROR: u8 = 1;

#[derive(Parser, Debug)]
#[command(
    name = "receptorctl",
    version,
    about = "Control a receptor node (Rust receptorctl, over gRPC)"
)]
struct Cli {
    /// Control socket address for the Receptor connection: a Unix path (`unix:` optional),
    /// `tcp://HOST:PORT` or `tls://HOST:PORT`; `grpc+unix:PATH` / `grpc+tls://HOST:PORT`
    /// for a pure gRPC endpoint.
    #[arg(long, env = "RECEPTORCTL_SOCKET")]
    socket: Option<String>,
    /// Config filename configured for receptor (with --tls-client).
    #[arg(long, short = 'c', env = "RECEPTORCTL_CONFIG")]
    config: Option<PathBuf>,
    /// TLS client name specified in config.
    #[arg(long = "tls-client", env = "RECEPTORCTL_TLSCLIENT")]
    tls_client: Option<String>,
    /// Root CA bundle to use instead of system trust when connecting with tls.
    #[arg(long)]
    rootcas: Option<PathBuf>,
    /// Client private key filename.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Client certificate filename.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Accept any server cert name (the chain is still verified).
    #[arg(long, action = clap::ArgAction::Set, value_parser = parse_click_bool, default_value = "false")]
    insecureskipverify: bool,
    /// Print JSON (every command).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// click's BOOL type: what `--insecureskipverify VALUE` accepts.
fn parse_click_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "t" | "yes" | "y" | "on" => Ok(true),
        "0" | "false" | "f" | "no" | "n" | "off" | "" => Ok(false),
        _ => Err(format!("{value:?} is not a valid boolean")),
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the status of the Receptor network.
    Status {
        /// Print the mesh graph instead: `text` (default) or `dot` (Graphviz).
        #[arg(long, num_args = 0..=1, default_missing_value = "text", value_name = "FORMAT")]
        graph: Option<GraphFormat>,
    },
    /// Ping a Receptor node.
    Ping {
        node: String,
        /// Number of pings to send.
        #[arg(long, default_value_t = 4)]
        count: u32,
        /// Time to wait between pings (seconds).
        #[arg(long, default_value_t = 1.0)]
        delay: f64,
    },
    /// Reload receptor configuration.
    Reload,
    /// Do a traceroute to a Receptor node.
    Traceroute { node: String },
    /// Connect the local terminal to a Receptor service on a remote node.
    Connect {
        node: String,
        service: String,
        /// Set terminal to raw mode.
        #[arg(long, short = 'r')]
        raw: bool,
        /// TLS client config name used when connecting to remote node.
        #[arg(long = "tls-client", default_value = "")]
        tls_client: String,
    },
    /// Show version information for receptorctl and the receptor node.
    Version,
    /// Commands related to unit-of-work processing.
    #[command(subcommand)]
    Work(WorkCommand),
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum GraphFormat {
    Text,
    Dot,
}

#[derive(Subcommand, Debug)]
enum WorkCommand {
    /// List known units of work.
    List {
        /// Only list unit IDs with no detail.
        #[arg(long, short = 'q')]
        quiet: bool,
        /// Receptor node to list work from. Defaults to the local node.
        #[arg(long)]
        node: Option<String>,
        /// Only show detail for a specific unit id.
        #[arg(long = "unit_id", default_value = "")]
        unit_id: String,
        /// TLS client config name used when connecting to remote node.
        #[arg(long = "tls-client", default_value = "")]
        tls_client: String,
    },
    /// Submit a new unit of work.
    Submit(SubmitArgs),
    /// Get results for a previously or currently running unit of work.
    Results { unit_id: String },
    /// Cancel (kill) one or more units of work.
    Cancel { unit_ids: Vec<String> },
    /// Release (delete) one or more units of work.
    Release {
        /// Delete locally even if we can't reach the remote node.
        #[arg(long)]
        force: bool,
        /// Delete all work units.
        #[arg(long)]
        all: bool,
        unit_ids: Vec<String>,
    },
    /// Print units' state changes as they happen (all units, or one).
    Watch {
        unit_id: Option<String>,
        /// Do not start with the current state of existing units.
        #[arg(long)]
        no_existing: bool,
    },
}

#[derive(Args, Debug)]
struct SubmitArgs {
    worktype: String,
    /// Receptor node to run the work on. Defaults to the local node.
    #[arg(long)]
    node: Option<String>,
    /// File containing unit of work data. Use - for stdin.
    #[arg(long, short = 'p')]
    payload: Option<String>,
    /// Use the command line string as the literal unit of work data.
    #[arg(long = "payload-literal", short = 'l')]
    payload_literal: Option<String>,
    /// Send an empty payload.
    #[arg(long = "no-payload", short = 'n')]
    no_payload: bool,
    /// TLS client used when submitting work to a remote node.
    #[arg(long = "tls-client", default_value = "")]
    tls_client: String,
    /// Time to live until remote work must start, e.g. 1h20m30s or 30m10s.
    #[arg(long, default_value = "")]
    ttl: String,
    /// Digitally sign remote work submissions.
    #[arg(long)]
    signwork: bool,
    /// Remain attached to the job and print its results to stdout.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Release unit after completion.
    #[arg(long)]
    rm: bool,
    /// Additional Receptor parameter (key=value format).
    #[arg(long, short = 'a')]
    param: Vec<String>,
    /// Extra command-line parameters for the work command.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cmdparams: Vec<String>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let _ = e.print();
            return match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => ExitCode::SUCCESS,
                // click usage errors exit 1 under receptorctl's standalone_mode=False.
                _ => ExitCode::from(EXIT_ERROR),
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            output::print_error(&format!("starting the runtime: {e}"));
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let code = runtime.block_on(commands::run(cli));
    // A blocking stdin read (`connect`) must not hold the process open.
    runtime.shutdown_background();
    ExitCode::from(code)
}
