//! `emailverify`: parses the command line and runs it (see `emailverify::cli`).

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    emailverify::cli::Cli::parse().run().await
}
