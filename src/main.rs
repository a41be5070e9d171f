//! The `ecr-audit` binary: parse flags, start logging, dispatch, map errors to exit codes.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = ecr_audit::config::Cli::parse();
    ecr_audit::telemetry::init(cli.log_format);
    let code = match ecr_audit::cli::run(cli.command).await {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            ecr_audit::cli::exit::ERROR
        }
    };
    std::process::exit(code);
}
