#![forbid(unsafe_code)]

use clap::Parser;

fn main() {
    // Panics caught inside the image layer become ordinary errors; any other panic
    // is a bug in wingold, reported on one line like every other error.
    std::panic::set_hook(Box::new(|info| {
        if !wingold::image::panic_is_guarded() {
            let text = info.to_string().replace('\n', " ");
            eprintln!("wingold: internal error (a bug, please report it): {text}");
        }
    }));
    let args = wingold::cli::Cli::parse();
    if let Err(err) = wingold::cli::run(args) {
        eprintln!("wingold: {err:#}");
        std::process::exit(wingold::cli::exit_code(&err));
    }
}
