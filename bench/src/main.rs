//! passerelle-bench: a load generator for SMTP servers with mandatory TLS, and a sink that
//! counts what it receives. `bench/README.md` says how to run them and what the figures mean.
//!
//! - `load.rs`: the client (`load`), and holding idle TLS sessions (`load --idle N`).
//! - `message.rs`: the messages it sends, in three shapes (plain text, text and HTML, a PDF
//!   attached).
//! - `sink.rs`: the server (`sink`): STARTTLS required, messages counted and discarded.
//! - `sign.rs`: the handshake signature's cost per certificate type (`sign`).
//! - `conn.rs`: the buffered SMTP stream both use; `tls.rs`: rustls (ring) configurations;
//!   `stats.rs`: CPU time, percentiles, errors by code, the sink's counter port.

mod conn;
mod load;
mod message;
mod sign;
mod sink;
mod stats;
mod tls;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Worker threads of the async runtime (default: one per core).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send messages (or hold idle sessions) and print the figures.
    Load(load::LoadArgs),
    /// Accept messages over STARTTLS, count them, throw them away.
    Sink(sink::SinkArgs),
    /// Time the server's handshake signature with a key file (ring, as the servers use it).
    Sign(sign::SignArgs),
    /// Print one message as the load generator would send it (before the final dot).
    Sample(message::SampleArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    raise_fd_limit();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = cli.threads {
        runtime.worker_threads(n);
    }
    let work: std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>>>> = match cli.command {
        Command::Load(args) => Box::pin(load::run(args)),
        Command::Sink(args) => Box::pin(sink::run(args)),
        // No sockets: timed on this thread alone.
        Command::Sign(args) => return sign::run(args),
        Command::Sample(args) => return message::sample(args),
    };
    runtime.build()?.block_on(work)
}

/// Thousands of connections need thousands of descriptors: take the hard limit.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
