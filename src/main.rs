#![deny(unsafe_code)]

use clap::{CommandFactory, FromArgMatches};

fn main() {
    // Panics caught inside the image layer become ordinary errors; any other panic
    // is a bug in wingold, reported on one line like every other error.
    std::panic::set_hook(Box::new(|info| {
        // A reader that stopped reading (`wingold … | head`) ends the output: not
        // an error, as with any Unix filter.
        if info
            .to_string()
            .contains("failed printing to stdout: Broken pipe")
        {
            std::process::exit(0);
        }
        if !wingold::image::panic_is_guarded() {
            let text = info.to_string().replace('\n', " ");
            eprintln!("wingold: internal error (a bug, please report it): {text}");
        }
    }));
    // What lower layers note while they work reaches stderr as one line each.
    wingold::note::set_sink(|text| {
        eprintln!(
            "wingold: {}",
            wingold::cli::terminal_safe(&text.replace('\n', "\\n"))
        );
    });
    // Settings that lower layers name in their messages are this command line's
    // options.
    wingold::error::set_spelling(wingold::cli::spell);
    let matches = wingold::cli::Cli::command().get_matches();
    let args = match wingold::cli::Cli::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    // A panic (a bug) has printed its one line through the hook: exit 1, "failed",
    // not Rust's 101.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Test-only (feature `test-hooks`), like WINGOLD_TEST_KILL_AT: proves
        // what a bug looks like.
        #[cfg(feature = "test-hooks")]
        if std::env::var_os("WINGOLD_TEST_PANIC").is_some() {
            panic!("a panic asked for by WINGOLD_TEST_PANIC");
        }
        wingold::cli::run(args, Some(&matches))
    }));
    match result {
        // One line for an error (a reader that stopped reading ends the output
        // quietly, text or JSON); the exit code from its kind.
        Ok(result) => match wingold::cli::finish(result) {
            0 => {}
            code => std::process::exit(code),
        },
        Err(_) => std::process::exit(wingold::error::Kind::Failure.exit_code()),
    }
}
