#![forbid(unsafe_code)]

use clap::Parser;

fn main() {
    let args = wingold::cli::Cli::parse();
    if let Err(err) = wingold::cli::run(args) {
        eprintln!("wingold: {err:#}");
        std::process::exit(wingold::cli::exit_code(&err));
    }
}
