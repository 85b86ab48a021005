//! `receptor`: parse the command line, set up logging, run the daemon until a signal.

use std::process::ExitCode;
use std::time::Duration;

use receptor_server::certs;
use receptor_server::config::{self, Config, Invocation};
use receptor_server::daemon::Daemon;
use receptor_server::error_chain;
use receptor_server::telemetry::{self, Settings};

/// The configuration `receptor --default-config` runs.
const DEFAULT_CONFIG: &str = include_str!("../../deploy/default.yaml");
/// How long shutdown may take before remaining tasks are aborted.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let invocation = if args.iter().any(|a| a == "--default-config") {
        if args.len() > 1 {
            println!("Error: cannot specify any other options with --default-config");
            return ExitCode::FAILURE;
        }
        config::from_yaml_str(DEFAULT_CONFIG, "embedded default config").map(Invocation::Run)
    } else {
        config::from_args(args)
    };
    let config = match invocation {
        Ok(Invocation::Run(config)) => config,
        Ok(Invocation::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(error) => return report(&error.problems),
    };
    let unsupported = config::unsupported(&config);
    if !unsupported.is_empty() {
        return report(&unsupported);
    }
    let one_shot = config.cert_command.is_some() || config.command_runner.is_some();
    if one_shot || !config.has_backends() {
        // Utilities and the command runner never export: they would each start an exporter.
        if let Err(error) = telemetry::init(config.log_level, None) {
            println!("Error: {}", error_chain(&error));
            return ExitCode::FAILURE;
        }
    }
    if let Some(command) = &config.cert_command {
        // An exclusive utility: run it and exit.
        let stdin = std::io::stdin();
        return match certs::run(command, &mut stdin.lock(), &mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                println!("Error: {}", error_chain(&error));
                ExitCode::FAILURE
            }
        };
    }
    if let Some(runner) = &config.command_runner {
        // The hidden entity a node uses to run one work unit (spec §2.6).
        let code = receptor_server::work::runner::run(runner);
        return ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX));
    }
    if !config.has_backends() {
        tracing::warn!("Nothing to do - no backends are running.");
        println!("Run receptor --help for command line instructions.");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            println!("Error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP exporter's gRPC channel lives on the runtime.
    let settings = Settings::resolve(&config, |name| std::env::var(name).ok());
    let telemetry =
        match runtime.block_on(async { telemetry::init(config.log_level, settings.as_ref()) }) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                println!("Error: {}", error_chain(&error));
                return ExitCode::FAILURE;
            }
        };
    let code = runtime.block_on(run(config));
    // After the daemon stopped, so that its last spans (sessions, units) are in the flush.
    telemetry.shutdown(telemetry::SHUTDOWN_DEADLINE);
    code
}

/// Go prints configuration errors as `Error: ...` on stdout and exits 1; we list them all.
fn report(problems: &[config::Problem]) -> ExitCode {
    for problem in problems {
        println!("Error: {problem}");
    }
    ExitCode::FAILURE
}

async fn run(config: Config) -> ExitCode {
    let daemon = match Daemon::spawn(&config).await {
        Ok(daemon) => daemon,
        Err(error) => {
            println!("Error: {}", error_chain(&error));
            return ExitCode::FAILURE;
        }
    };
    telemetry::export_metrics(daemon.metrics());
    let stopped_itself = tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!(signal, "shutting down");
            false
        }
        () = daemon.node_stopped() => true,
    };
    if let Err(error) = daemon.shutdown(SHUTDOWN_GRACE).await {
        tracing::warn!(%error, "shutdown was not clean");
    }
    if stopped_itself {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers only Ctrl-C via tokio's fallback remains.
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
