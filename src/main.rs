//! The `smarthost` binary; also `sendmail`, `mailq` and `newaliases` by name.

fn main() {
    std::process::exit(smarthost::cli::main(std::env::args_os().collect()));
}
