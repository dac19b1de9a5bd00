//! The `tassis` binary: one role per subcommand. `standalone` runs all four services in one
//! process, wired through the same gRPC interfaces as in a cluster, on the embedded backends.

mod roles;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "tassis",
    version,
    about = "End-to-end-encrypted messaging back end (Signal protocol): key distribution and message transport"
)]
struct Cli {
    #[command(subcommand)]
    role: roles::Role,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // One-shot commands (federation-keygen) need no runtime, logs or traces.
    let Some(common) = cli.role.common().cloned() else {
        return match cli.role.run_once() {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tassis: {e:#}");
                std::process::ExitCode::from(2)
            }
        };
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tassis: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    // Logs, and traces over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set (the gRPC exporter needs
    // the runtime).
    let service = format!("tassis-{}", cli.role.name());
    let telemetry = {
        let _rt = rt.enter();
        match tassis_runtime::telemetry::init(common.log_format, &common.log, &service) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("tassis: {e}");
                return std::process::ExitCode::from(2);
            }
        }
    };
    let res = rt.block_on(cli.role.run());
    // Flush spans while the runtime still runs the exporter's connection.
    telemetry.shutdown();
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tassis: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
