//! `duet`: a private video call between two people.
//!
//! The binary's edge: command-line parsing, logging and process signals.
//! Everything with rules lives in the library crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use duet_signal::RoleRequest;

mod call_command;
mod invitation;
mod serve_command;
mod window;
use call_command::CallArgs;
use serve_command::ServeArgs;

/// A private video call between two people.
#[derive(Debug, Parser)]
#[command(name = "duet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the signaling server that lets two peers find each other; it serves the browser client at / too.
    Serve(ServeArgs),
    /// Call as the caller (the peer that offers); same as `call --role caller`.
    Caller(CallArgs),
    /// Call as the callee (the peer that answers); same as `call --role callee`.
    Callee(CallArgs),
    /// Call with a role of your choice (auto: whichever seat is free).
    Call {
        /// caller, callee or auto.
        #[arg(long, value_name = "ROLE", default_value = "auto", value_parser = parse_role)]
        role: RoleRequest,
        #[command(flatten)]
        args: CallArgs,
    },
    /// One window, one machine: an embedded server and a call between two ends.
    Demo,
    /// List the cameras, microphones and speakers found on this machine.
    Devices,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("duet: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The window must own the main thread, so the runtime runs beside it
    // rather than around it.
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Serve(args) => runtime
            .block_on(serve_command::serve(args))
            .map(|()| ExitCode::SUCCESS),
        Command::Caller(args) => Ok(call_command::run(&runtime, args, RoleRequest::Caller)),
        Command::Callee(args) => Ok(call_command::run(&runtime, args, RoleRequest::Callee)),
        Command::Call { role, args } => Ok(call_command::run(&runtime, args, role)),
        Command::Demo => Ok(call_command::demo(&runtime)),
        Command::Devices => {
            print!("{}", devices_report());
            Ok(ExitCode::SUCCESS)
        }
    };
    // Media threads and sockets of a finished call must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_millis(300));
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("duet: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Duet's own lines at info; the WebRTC stack only when something is wrong.
/// The packet handler warns of every duplicate SRTP packet, and with NACK a
/// duplicate is routine (a resend that crossed its original): errors only.
/// zbus warns of every desktop-portal request that ends before its
/// properties are read, which is how each of them ends: errors only too.
const DEFAULT_LOG_FILTER: &str = "info,webrtc=warn,rtc=warn,rtc::peer_connection::handler=error,\
rtc_ice=warn,rtc_dtls=warn,rtc_sctp=warn,rtc_srtp=warn,rtc_interceptor=warn,rtc_mdns=warn,zbus=error";

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DUET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Duet's lines reach the terminal even while the sound libraries'
        // chatter is being kept out of it (duet_media::devices::TerminalStderr).
        .with_writer(duet_media::devices::TerminalStderr::init)
        .with_target(false)
        .init();
}

/// What `duet devices` prints: every kind of device, or why there is none.
fn devices_report() -> String {
    use duet_media::devices::{list_audio_devices, list_cameras};
    let mut report = String::from("cameras:\n");
    match list_cameras() {
        Ok(cameras) if cameras.is_empty() => {
            report.push_str("  (none found: --video test is used instead)\n")
        }
        Ok(cameras) => {
            for camera in cameras {
                report.push_str(&format!("  camera:{}  {}\n", camera.index, camera.name));
            }
        }
        Err(err) => report.push_str(&format!("  (cannot list: {err})\n")),
    }
    for (title, input, flag, fallback) in [
        (
            "microphones",
            true,
            "--audio mic:",
            "--audio test is used instead",
        ),
        ("speakers", false, "", "received audio is not played"),
    ] {
        report.push_str(&format!("{title}:\n"));
        match list_audio_devices(input) {
            Ok(names) if names.is_empty() => {
                report.push_str(&format!("  (none found: {fallback})\n"))
            }
            Ok(names) => {
                for name in names {
                    report.push_str(&format!("  {flag}{name}\n"));
                }
            }
            Err(err) => report.push_str(&format!("  (cannot list: {err})\n")),
        }
    }
    report
}

fn parse_role(value: &str) -> Result<RoleRequest, String> {
    match value {
        "caller" => Ok(RoleRequest::Caller),
        "callee" => Ok(RoleRequest::Callee),
        "auto" => Ok(RoleRequest::Auto),
        _ => Err(format!(
            "{value:?} is not a role: use caller, callee or auto"
        )),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(err) => {
                tracing::warn!(%err, "cannot watch SIGTERM; only Ctrl-C stops the server");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
