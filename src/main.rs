fn main() -> std::process::ExitCode {
    passerelle::cli::run()
}
